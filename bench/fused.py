#!/usr/bin/env python3
"""Fused launcher against the basic launcher, end to end, on one 8-point learning-rate grid.

usage: python bench/fused.py [--root bench/data/miniplaces_fused] [--train-per-class 90]
                             [--batch-sizes 8 32] [--epochs 1] [--fuse true] [runner overrides ...]

Writes a MiniPlaces-shaped data set with bench/make_data.py (official layout, 100 classes,
128x128 JPEGs; 90 train + 10 val images a class: 10,000 images) if ROOT has none, then for
each batch size times `python -m runner -m dataset=miniplaces lr=<8 values> ...` with
hydra/launcher=basic and with hydra/launcher=fused (hydra.launcher.fuse=--fuse), wall clock
end to end (process start, data decoding, training, run folders, the collector), and prints both
times, the ratio basic/fused and the best val acc of each. Every figure comes from this one run.
"""

from __future__ import annotations

import argparse
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

GRID = "0.001,0.002,0.005,0.01,0.02,0.03,0.05,0.1"


def sweep(root: Path, batch_size: int, launcher: str, epochs: int, fuse: str, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, best val acc over the grid) of one sweep."""
    out = Path(tempfile.mkdtemp(prefix=f"fused_bench_{launcher}_{batch_size}_"))
    command = [sys.executable, "-m", "runner", "-m", f"hydra.sweep.dir={out}", "dataset=miniplaces",
               f"dataset.root={root}", f"lr={GRID}", f"batch_size={batch_size}", f"epochs={epochs}",
               "tensorboard=false", "progress=false", f"hydra/launcher={launcher}", *extra]
    if launcher == "fused":
        command.append(f"hydra.launcher.fuse={fuse}")
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep failed: {' '.join(command)}\n{proc.stderr[-2000:]}")
    results = pd.read_csv(out / "results.csv")
    return wall, float(results["best_val_acc"].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO / "bench" / "data" / "miniplaces_fused")
    parser.add_argument("--train-per-class", type=int, default=90)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fuse", default="true", choices=["auto", "true", "false"])
    args, extra = parser.parse_known_args()
    root = args.root.resolve()
    ensure_miniplaces(root, args.train_per_class, val_per_class=10)
    print(f"8-point lr grid ({GRID}), LeNet, MiniPlaces-shaped {args.train_per_class * 100 + 1000} images, "
          f"epochs={args.epochs}, {os.cpu_count()} CPUs")
    print(f"{'batch':>5} {'basic s':>8} {'fused s':>8} {'basic/fused':>11} {'acc basic':>9} {'acc fused':>9}")
    for batch_size in args.batch_sizes:
        basic_s, basic_acc = sweep(root, batch_size, "basic", args.epochs, args.fuse, extra)
        fused_s, fused_acc = sweep(root, batch_size, "fused", args.epochs, args.fuse, extra)
        print(f"{batch_size:>5} {basic_s:>8.1f} {fused_s:>8.1f} {basic_s / fused_s:>10.2f}x "
              f"{basic_acc:>9.2f} {fused_acc:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
