#!/usr/bin/env python3
"""`replicates=4` against 4 separate runs of the same config, end to end, at each batch size.

usage: python bench/replicates.py [--root bench/data/miniplaces_replicates] [--train-per-class 20]
                                  [--batch-sizes 8 32] [--epochs 1] [--replicates 4] [runner overrides ...]

Writes a MiniPlaces-shaped data set with bench/make_data.py (official layout, 100 classes, 128x128
JPEGs, decoded once to 32x32 and cached) if ROOT has none, then for each batch size times, each
as one `python -m runner` process with LeNet at the course's lr:
  runs        `-m seed=0,1,2,3` (the basic launcher: 4 runs, one after another; no collector),
  replicates  `replicates=4` (one job: seeds 0-3 fused where fuse=auto fuses them, else one after another),
and prints both wall times, their ratio replicates/runs (below 1: the replicates cost less), the same
ratio of the training and validation seconds the runs record, how the replicates trained, and the
mean best val acc of each. Every figure comes from this one run.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # a script's folder is on the path, but not when imported

from make_data import ensure_miniplaces  # noqa: E402


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runner", *command], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: python -m runner {' '.join(command)}\n{proc.stderr[-2000:]}")
    return wall


def work_s(summaries: list[dict]) -> float:
    return sum(s["train_s"] + s["val_s"] for s in summaries)


def measure(common: list[str], n: int) -> dict[str, tuple]:
    """{"runs": (wall s, train+val s, mean acc), "replicates": (..., trained as)}."""
    out = Path(tempfile.mkdtemp(prefix="replicates_bench_"))
    seeds = ",".join(str(k) for k in range(n))
    runs_wall = timed(["-m", f"seed={seeds}", f"hydra.sweep.dir={out / 'runs'}", "~hydra.callbacks.collect", *common])
    runs = [json.loads((out / "runs" / str(k) / "summary.json").read_text()) for k in range(n)]
    job_wall = timed([f"replicates={n}", f"hydra.run.dir={out / 'job'}", *common])
    job = json.loads((out / "job" / "summary.json").read_text())
    replicas = [json.loads((out / "job" / f"replicate_{k}" / "summary.json").read_text()) for k in range(n)]
    trained = "fused" if str(job.get("step_path", "")).startswith("fused") else "one after another"
    return {"runs": (runs_wall, work_s(runs), sum(r["best_val_acc"] for r in runs) / n),
            "replicates": (job_wall, work_s(replicas), job["replicates"]["mean"], trained)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO / "bench" / "data" / "miniplaces_replicates")
    parser.add_argument("--train-per-class", type=int, default=20)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--replicates", type=int, default=4)
    args, extra = parser.parse_known_args()
    root = args.root.resolve()
    n_train, n_val = ensure_miniplaces(root, args.train_per_class, val_per_class=10)
    n = args.replicates
    print(f"replicates={n} against {n} runs (seeds 0-{n - 1}), LeNet, MiniPlaces-shaped {n_train} train / {n_val} "
          f"val images, epochs={args.epochs}, {os.cpu_count()} CPUs")
    print(f"{'batch':>5} {'runs s':>7} {'repl s':>7} {'repl/runs':>9} {'train+val':>9} {'replicates':>17} "
          f"{'acc runs':>8} {'acc repl':>8}")
    with tempfile.TemporaryDirectory() as warm:  # the one-off JPEG decode is in neither side's time
        timed(["dataset=miniplaces", f"dataset.root={root}", "batch_size=128", "epochs=1", "tensorboard=false",
               f"hydra.run.dir={warm}", *extra])
    for batch_size in args.batch_sizes:
        common = ["dataset=miniplaces", f"dataset.root={root}", f"batch_size={batch_size}", "lr=0.001",
                  f"epochs={args.epochs}", "tensorboard=false", "progress=false", *extra]
        m = measure(common, n)
        (runs_wall, runs_work, runs_acc), (job_wall, job_work, job_acc, trained) = m["runs"], m["replicates"]
        print(f"{batch_size:>5} {runs_wall:>7.1f} {job_wall:>7.1f} {job_wall / runs_wall:>8.2f}x "
              f"{job_work / runs_work:>8.2f}x {trained:>17} {runs_acc:>8.2f} {job_acc:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
