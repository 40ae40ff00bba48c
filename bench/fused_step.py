#!/usr/bin/env python3
"""One training step of K LeNets: K single steps against the fused step, in its layouts and updates.

usage: python bench/fused_step.py [--trials 8] [--batch-sizes 8 32] [--threads 1 2] [--rounds 9]

Times (median of --rounds interleaved rounds of 10 steps, random 32x32 images, 100 classes, SGD
momentum 0.9) of:
  single        K models one after another, each its own step (the basic launcher's trials)
  fused nchw    the fused step with compute.channels_last=false, each trial's optimizer.step()
  fused nhwc    the same with compute.channels_last=true (runner/fused/stack.py's layouts)
  fused nhwc+1  channels-last and one stacked SGD update for all trials (runner/fused/update.py)
and the ratio single / fused for the last. The single runs use channels-last too (the default).
Where other processes share the machine, rounds interleave so they share its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import runner  # noqa: E402,F401  (first: it sets the runner's OpenMP wait policy before torch loads)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from models.lenet import LeNet  # noqa: E402
from runner.fused.stack import StackedModels  # noqa: E402
from runner.fused.update import StackedSGD  # noqa: E402


def single_steps(xs: list[torch.Tensor], y: torch.Tensor) -> Callable[[], None]:
    models = [LeNet(3, 32, 100, return_shapes=False).to(memory_format=torch.channels_last) for _ in xs]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in models]

    def step() -> None:
        for model, optimizer, x, target in zip(models, optimizers, xs, y):
            loss = nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return step


def fused_step(xs: list[torch.Tensor], y: torch.Tensor, channels_last: bool,
               stacked_update: bool) -> Callable[[], None]:
    models = [LeNet(3, 32, 100, return_shapes=False) for _ in xs]
    stack = StackedModels(models, channels_last=channels_last)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in models]

    def step() -> None:
        logits = stack.forward(stack.stack_inputs(xs))
        stack.zero_grad()
        sum(nn.functional.cross_entropy(logits[k], y[k]) for k in range(len(xs))).backward()
        if stacked_update:
            StackedSGD.of(stack, optimizers).step()  # type: ignore[union-attr]
            return
        stack.hand_out_grads()
        for optimizer in optimizers:
            optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_flush_denormal(True)  # as runner/run/compute.py does on a CPU
    print(f"ms per step of {args.trials} LeNets (median of {args.rounds} rounds), torch {torch.__version__}")
    print(f"{'threads':>7} {'batch':>5} {'single':>8} {'fused nchw':>10} {'fused nhwc':>10} {'fused nhwc+1':>12} "
          f"{'single/fused':>12}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch_sizes:
            torch.manual_seed(0)
            xs = [torch.randn(batch, 3, 32, 32) for _ in range(args.trials)]
            y = torch.randint(0, 100, (args.trials, batch))
            steps = {"single": single_steps(xs, y), "nchw": fused_step(xs, y, False, False),
                     "nhwc": fused_step(xs, y, True, False), "nhwc+1": fused_step(xs, y, True, True)}
            for step in steps.values():  # warm-up: oneDNN primitives, momentum buffers
                for _ in range(3):
                    step()
            ms: dict[str, list[float]] = {name: [] for name in steps}
            for _ in range(args.rounds):
                for name, step in steps.items():
                    t0 = time.perf_counter()
                    for _ in range(10):
                        step()
                    ms[name].append((time.perf_counter() - t0) * 100)
            m = {name: statistics.median(v) for name, v in ms.items()}
            print(f"{threads:>7} {batch:>5} {m['single']:>8.1f} {m['nchw']:>10.1f} {m['nhwc']:>10.1f} "
                  f"{m['nhwc+1']:>12.1f} {m['single'] / m['nhwc+1']:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
