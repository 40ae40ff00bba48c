#!/usr/bin/env python3
"""The runner's arithmetic on the course loop's own random order: what is left when chance is taken out.

    python bench/fidelity_replay.py ROOT [--epochs 10] [--seed 0] [--threads 1]

Runs bench/course_loop.py's `train()` unchanged (CPU) while recording the order it drew (which
training image came in each batch and whether its flip fired) and each batch's loss. Then it
trains the runner's own pieces on exactly those batches: the model, optimizer, scheduler and loss built from the
runner's config (`dataset=miniplaces`, the course defaults), its uint8 `Normalize`, its
channels-last layout and CPU settings, its one epoch loop `train_epoch` and `evaluate`. Only the source of
randomness is swapped (the runner draws its shuffle and flips from the same generator in
another order). Prints one JSON line: {"seed", "epochs", "course_best_val_acc",
"runner_best_val_acc", "course_train_loss", "runner_train_loss", "runner_val_acc"} (the last
three per epoch).

If the two pipelines computed the same thing, the two best accuracies differ only by float
rounding amplified over training; bench/fidelity.py --replay runs this over many seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):  # run as a script from a plain clone
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import course_loop  # noqa: E402
from runner.run.epoch import BatchSource  # noqa: E402


class RecordingMiniPlaces(course_loop.MiniPlaces):
    """The course loop's Dataset, noting each item it serves and whether the random flip fired."""

    made: list["RecordingMiniPlaces"] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.served: list[tuple[int, bool]] = []
        # The same transform without its random steps: an output that differs from it was flipped.
        steps = [t for t in self.transform.transforms if not isinstance(t, course_loop.transforms.RandomHorizontalFlip)]
        self.plain = course_loop.transforms.Compose(steps)
        RecordingMiniPlaces.made.append(self)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = super().__getitem__(i)
        self.served.append((i, not torch.equal(x, self.plain(course_loop.Image.fromarray(self.images[i])))))
        return x, y


class RecordingLoss(nn.CrossEntropyLoss):
    """The course loop's loss, noting each training batch's mean loss and size."""

    seen: list[tuple[float, int]] = []

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = super().forward(logits, y)
        RecordingLoss.seen.append((loss.item(), len(y)))
        return loss


class _RecordingNn:
    """torch.nn as course_loop.py sees it, with the recording loss: its train() is run unchanged."""

    CrossEntropyLoss = RecordingLoss

    def __getattr__(self, name: str) -> object:
        return getattr(nn, name)


def course_order(root: Path, epochs: int, seed: int) -> tuple[dict, list[tuple[int, bool]], list[float]]:
    """The course loop's result, the (image index, flipped) sequence its training drew, its train loss per epoch."""
    RecordingMiniPlaces.made.clear()
    RecordingLoss.seen.clear()
    saved = course_loop.MiniPlaces, course_loop.nn
    course_loop.MiniPlaces, course_loop.nn = RecordingMiniPlaces, _RecordingNn()
    try:
        result = course_loop.train(root, epochs, 32, 0.001, 0, seed, "cpu")
    finally:
        course_loop.MiniPlaces, course_loop.nn = saved
    train_set = RecordingMiniPlaces.made[0]  # train() builds the training set first, then validation
    per_epoch = len(RecordingLoss.seen) // epochs
    losses = [sum(loss * n for loss, n in part) / sum(n for _, n in part)
              for part in (RecordingLoss.seen[e * per_epoch:(e + 1) * per_epoch] for e in range(epochs))]
    return result, train_set.served, losses


def runner_on_order(root: Path, epochs: int, seed: int, threads: int,
                    order: list[tuple[int, bool]]) -> tuple[list[float], list[float]]:
    """The runner's components trained on `order`; per-epoch val acc and train loss."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import execution_whitelist

    import runner.config.schema  # noqa: F401  (registers the config schema)
    from runner.trust.targets import run_whitelist

    with initialize_config_dir(config_dir=str(REPO / "conf")):
        cfg = compose("config", overrides=["dataset=miniplaces", f"dataset.root={root}", f"seed={seed}",
                                           f"compute.threads={threads}", "device=cpu",
                                           "dataset.num_classes=null"])  # counted, as the course loop does
    with execution_whitelist(run_whitelist(cfg), reset=True):  # as runner/run/train.py builds a run
        return _train_on_order(cfg, epochs, order)


def _train_on_order(cfg: DictConfig, epochs: int, order: list[tuple[int, bool]]) -> tuple[list[float], list[float]]:
    """runner/run/train.py's set-up and epochs (seed, compute, data, model, optimizer...), batches from `order`."""
    from data.augment import Normalize
    from data.splits import ResidentSplit
    from runner.run.build import build
    from runner.run.compute import configure_compute
    from runner.run.epoch import evaluate, train_epoch
    from runner.run.setup import RunData, build_optimization, seed_everything
    from runner.run.step import SingleLearner

    seed_everything(cfg.seed)
    amp_dtype = configure_compute(cfg.compute, torch.device("cpu"))
    channels_last = bool(cfg.compute.channels_last)
    dataset = build(cfg.dataset, "dataset")
    splits = dataset.load()  # the runner's own decode and cache
    with open_dict(cfg):
        cfg.dataset.num_classes = dataset.num_classes
    model = build(cfg.model, "model")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n = len(splits.train_labels)
    optimization = build_optimization(cfg, model, -(-n // cfg.batch_size))
    val = ResidentSplit(splits.val_images, splits.val_labels)
    data = RunData(torch.device("cpu"), amp_dtype, dataset, {"train": None, "val": val}, nn.Identity(),
                   Normalize(dataset.mean, dataset.std), channels_last)
    learner = SingleLearner(model, nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), optimization,
                            cfg.grad_clip, amp_dtype)
    index = torch.tensor([i for i, _ in order])
    flipped = torch.tensor([f for _, f in order])
    accs, losses = [], []
    for epoch in range(epochs):
        idx, flip = index[epoch * n:(epoch + 1) * n], flipped[epoch * n:(epoch + 1) * n]
        batches = []
        for start in range(0, n, cfg.batch_size):
            x = splits.train_images[idx[start:start + cfg.batch_size]]
            f = flip[start:start + cfg.batch_size].view(-1, 1, 1, 1)
            batches.append((data.model_input(torch.where(f, x.flip(-1), x)),
                            splits.train_labels[idx[start:start + cfg.batch_size]]))
        row = train_epoch(learner, RecordedBatches(data, batches))[0]
        optimization.scheduler.step()
        accs.append(evaluate(model, val, data.normalize, amp_dtype, channels_last)["val_acc"])
        losses.append(row["train_loss"])
    return accs, losses


class RecordedBatches(BatchSource):
    """The runner's epoch loop over batches recorded from the course loop, already normalised."""

    def __init__(self, data, batches: list) -> None:
        super().__init__(data)
        self.recorded = batches

    def batches(self):
        return iter(self.recorded)


def replay(root: Path, epochs: int, seed: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    course, order, course_losses = course_order(root, epochs, seed)
    accs, losses = runner_on_order(root, epochs, seed, threads, order)
    return {"seed": seed, "epochs": epochs, "course_best_val_acc": course["best_val_acc"],
            "runner_best_val_acc": round(max(accs), 2), "course_train_loss": course_losses,
            "runner_train_loss": losses, "runner_val_acc": accs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not (args.root / "train.txt").exists():
        print(f"error: {args.root} has no train.txt; write a data set with python bench/make_data.py {args.root}",
              file=sys.stderr)
        raise SystemExit(2)
    if args.epochs < 1 or args.threads < 1:
        print("error: --epochs and --threads must be at least 1", file=sys.stderr)
        raise SystemExit(2)
    print(json.dumps(replay(args.root.absolute(), args.epochs, args.seed, args.threads)))


if __name__ == "__main__":
    main()
