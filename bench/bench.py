#!/usr/bin/env python3
"""The runner against the course's training loop, on the same MiniPlaces-shaped data, in one run.

usage: python bench/bench.py [--root bench/data/miniplaces] [--epochs 3] [--batch-sizes 8 32 128]
                             [--ablation] [--overhead] [--study] [--study-launcher joblib|basic|fused|fused-all ...]
                             [--skip-throughput] [runner overrides ...]

Writes the data set with bench/make_data.py if ROOT has none, then, for each batch size, runs
bench/course_loop.py (the reference: per-sample PIL transforms behind a DataLoader) and
`python -m runner` with the same model, data, batch size, lr, epochs and seed,
and prints training images per second, seconds per epoch, best validation accuracy and the
ratio runner/reference. With --study it also times the course's seven-configuration study
end to end both ways: seven reference runs one after the other, against `bash sweep.sh`.
Every figure comes from this one invocation, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # a script's folder is on the path, but not when imported

from make_data import ensure_miniplaces  # noqa: E402

COURSE_LOOP = REPO / "bench" / "course_loop.py"
# The course study: (name, batch size, lr, epochs); the rest at the course defaults.
COURSE = [("default", 32, 0.001, 10), ("batch8", 8, 0.001, 10), ("batch16", 16, 0.001, 10),
          ("lr0.05", 32, 0.05, 10), ("lr0.01", 32, 0.01, 10), ("epochs20", 32, 0.001, 20), ("epochs5", 32, 0.001, 5)]


def ensure_data(root: Path, train_per_class: int) -> int:
    return ensure_miniplaces(root, train_per_class, val_per_class=10)[0]


def reference(root: Path, batch_size: int, lr: float, epochs: int) -> dict:
    out = subprocess.run([sys.executable, str(COURSE_LOOP), str(root), "--epochs", str(epochs),
                          "--batch-size", str(batch_size), "--lr", str(lr)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def runner(root: Path, batch_size: int, lr: float, epochs: int, n_train: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        subprocess.run([sys.executable, "-m", "runner", "dataset=miniplaces", f"dataset.root={root}",
                        f"batch_size={batch_size}", f"lr={lr}", f"epochs={epochs}", "tensorboard=false",
                        f"hydra.run.dir={run_dir}", *extra], check=True, capture_output=True, text=True, cwd=REPO)
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return {"train_images_per_s": n_train * epochs / summary["train_s"], "epoch_s": summary["train_s"] / epochs,
            "best_val_acc": summary["best_val_acc"]}


def throughput(root: Path, n_train: int, batch_sizes: list[int], epochs: int, extra: list[str]) -> pd.DataFrame:
    rows = []
    for batch_size in batch_sizes:
        ref = reference(root, batch_size, 0.001, epochs)
        ours = runner(root, batch_size, 0.001, epochs, n_train, extra)
        rows.append({"batch": batch_size,
                     "ref img/s": ref["train_images_per_s"], "runner img/s": ours["train_images_per_s"],
                     "ratio": ours["train_images_per_s"] / ref["train_images_per_s"],
                     "ref s/epoch": ref["epoch_s"], "runner s/epoch": ours["epoch_s"],
                     "ref best acc": ref["best_val_acc"], "runner best acc": ours["best_val_acc"]})
        print(pd.DataFrame(rows[-1:]).to_markdown(index=False, floatfmt=".2f"), flush=True)
    return pd.DataFrame(rows)


# How each launcher runs the study (`--study-launcher`): joblib runs two one-thread trials at a time;
# fused (fuse=auto) trains default, 20 and 5 epochs as one trajectory (runner/fused/prefix.py) and,
# on a CPU, fuses only groups of batch 16 or less; fused-all fuses every group it can.
STUDY_LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "compute.threads=1"],
                   "fused": ["hydra/launcher=fused"], "fused-all": ["hydra/launcher=fused", "hydra.launcher.fuse=true"]}


def study(root: Path, launchers: list[str], extra: list[str]) -> dict:
    """The seven reference runs one after the other, then `bash sweep.sh` with each launcher."""
    t0 = time.perf_counter()
    frame = pd.DataFrame({"config": [c[0] for c in COURSE],
                          "ref best acc": [reference(root, b, lr, e)["best_val_acc"] for _, b, lr, e in COURSE]})
    seconds = {"reference": time.perf_counter() - t0}
    for launcher in launchers:
        with tempfile.TemporaryDirectory() as sweep_dir:
            t0 = time.perf_counter()
            subprocess.run(["bash", str(REPO / "sweep.sh"), "dataset=miniplaces", f"dataset.root={root}",
                            "tensorboard=false", *STUDY_LAUNCHERS[launcher], *extra], check=True,
                           capture_output=True, text=True, cwd=REPO, env={**os.environ, "SWEEP_DIR": sweep_dir})
            seconds[launcher] = time.perf_counter() - t0
            frame[f"{launcher} best acc"] = list(pd.read_csv(Path(sweep_dir) / "results.csv")["best_val_acc"])
    print(frame.to_markdown(index=False, floatfmt=".2f"))
    print("\ncourse study end to end:")
    print(pd.DataFrame([{"launcher": name, "wall s": s, "reference / this": seconds["reference"] / s,
                         **({"basic / this": seconds["basic"] / s} if "basic" in seconds else {})}
                        for name, s in seconds.items()]).to_markdown(index=False, floatfmt=".2f"))
    return seconds


ABLATIONS = [("defaults", []), ("channels_last off", ["compute.channels_last=false"]),
             ("1 thread", ["compute.threads=1"]), ("streamed from files (DataLoader)", ["compute.data_path=stream"]),
             ("torch.compile", ["compute.compile=true"])]


def ablation(root: Path, n_train: int, batch_size: int, epochs: int, extra: list[str]) -> None:
    """What each compute switch is worth: the runner's images/s with one switch changed at a time."""
    rows = []
    for name, overrides in ABLATIONS:
        ours = runner(root, batch_size, 0.001, epochs, n_train, [*extra, *overrides])
        rows.append({"variant": name, "img/s": ours["train_images_per_s"], "best acc": ours["best_val_acc"]})
    frame = pd.DataFrame(rows)
    frame["vs defaults"] = frame["img/s"] / frame["img/s"][0]
    print(f"compute switches at batch {batch_size} ({epochs} epochs):")
    print(frame.to_markdown(index=False, floatfmt=".2f"))


def trial_overhead(trials: int = 8) -> None:
    """Seconds between one trial's last validation and the next trial's first step, in one sequential sweep."""
    with tempfile.TemporaryDirectory() as sweep_dir:
        lrs = ",".join(str(0.01 + 0.001 * i) for i in range(trials))
        subprocess.run([sys.executable, "-m", "runner", "-m", f"lr={lrs}", "epochs=1", "tensorboard=false",
                        f"hydra.sweep.dir={sweep_dir}"], check=True, capture_output=True, text=True, cwd=REPO)
        runs = [json.loads((Path(sweep_dir) / str(i) / "summary.json").read_text()) for i in range(trials)]
    # The gap after trial k: from its last validation pass to trial k+1's start (its run folder,
    # checkpoints, plot, Hydra's job set-up, the next trial's model and data). The gap after the
    # first trial also holds one-off imports (matplotlib...), which later trials don't pay.
    gaps = [b["started_at"] - a["started_at"] - a["train_s"] - a["val_s"] for a, b in zip(runs, runs[1:])]
    later = gaps[1:]
    print(f"per-trial overhead, sequential sweep of {trials} one-epoch digits trials: after trial 1 "
          f"{gaps[0]:.3f}s (one-off imports); after trials 2..{trials - 1}: mean {sum(later) / len(later):.3f}s, "
          f"max {max(later):.3f}s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=REPO / "bench" / "data" / "miniplaces")
    p.add_argument("--train-per-class", type=int, default=100, help="when writing the data set (100 x 100 classes)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--study", action="store_true", help="also time the seven-configuration course study")
    p.add_argument("--study-launcher", nargs="+", choices=list(STUDY_LAUNCHERS), default=["joblib"],
                   help="one or more: the study runs once per launcher, the reference once")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--overhead", action="store_true", help="also measure the per-trial overhead of a sequential sweep")
    p.add_argument("--ablation", action="store_true", help="also measure each compute switch at batch 32")
    p.add_argument("overrides", nargs="*", help="extra runner overrides, e.g. compute.threads=1")
    a = p.parse_args()
    root = a.root.absolute()
    n_train = ensure_data(root, a.train_per_class)
    import torch

    print(f"data: {root} ({n_train} train images); torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"cuda={torch.cuda.is_available()}\n")
    # Warm both decode caches so neither side's timing includes the one-off JPEG decode.
    reference(root, 128, 0.001, 1)
    runner(root, 128, 0.001, 1, n_train, a.overrides)
    if not a.skip_throughput:
        table = throughput(root, n_train, a.batch_sizes, a.epochs, a.overrides)
        print("\n" + table.to_markdown(index=False, floatfmt=".2f"))
    if a.ablation:
        print()
        ablation(root, n_train, 32, a.epochs, a.overrides)
    if a.overhead:
        print()
        trial_overhead()
    if a.study:
        print()
        study(root, a.study_launcher, a.overrides)


if __name__ == "__main__":
    main()
