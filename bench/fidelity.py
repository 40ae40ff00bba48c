#!/usr/bin/env python3
"""Does the runner train as well as the course's loop? Both at the course default over many seeds.

    python bench/fidelity.py [--train-images 10000] [--val-images 1000] [--classes 100] [--epochs 10]
                             [--seeds 10] [--first-seed 0] [--threads 1] [--jobs 1] [--device cpu]
                             [--root DIR] [--replay] [runner overrides ...]

Writes a MiniPlaces-shaped data set (bench/make_data.py) unless --root holds one of that size,
then trains LeNet at the course default (batch 32, lr 0.001, SGD momentum 0.9, flip) once per
seed with bench/course_loop.py and once per seed with `python -m runner -m seed=...` (one
grid), and prints each side's mean ± std, the per-seed pairs and Welch's t-test. A seed gives
both sides the same initial weights, so the pairs are also compared with a paired t-test.
Every run uses --threads CPU threads (the same for both, so a CPU run repeats exactly);
--jobs runs that many seeds at once (the runner's grid through the joblib launcher).

--replay takes chance out: per seed, the course loop runs and the runner's own model,
optimizer, normalisation, step and evaluation train on the very batches and flips it drew
(bench/fidelity_replay.py). Left to differ is float rounding.

Ends with one JSON line holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # a script's folder is on the path, but not when imported

from make_data import ensure_miniplaces, fail  # noqa: E402

COURSE_LOOP = REPO / "bench" / "course_loop.py"
REPLAY = REPO / "bench" / "fidelity_replay.py"


def run_json(command: list[str], threads: int) -> dict:
    """Run a bench script that ends with one JSON line; a failure stops the bench naming the command."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        fail(f"{' '.join(command)} exited {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def course_runs(root: Path, seeds: list[int], epochs: int, threads: int, jobs: int, device: str) -> list[float]:
    """bench/course_loop.py once per seed: its best validation accuracy."""
    def one(seed: int) -> float:
        return run_json([sys.executable, str(COURSE_LOOP), str(root), "--epochs", str(epochs), "--seed", str(seed),
                         "--device", device], threads)["best_val_acc"]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, seeds))


def runner_grid(root: Path, seeds: list[int], epochs: int, threads: int, jobs: int, device: str,
                classes: int, overrides: list[str]) -> list[float]:
    """One `python -m runner -m seed=...` grid: each seed's best validation accuracy, in seed order."""
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    with tempfile.TemporaryDirectory() as sweep_dir:
        command = [sys.executable, "-m", "runner", "-m", "dataset=miniplaces", f"dataset.root={root}",
                   f"dataset.num_classes={classes}", "batch_size=32", "lr=0.001", f"epochs={epochs}",
                   f"seed={','.join(map(str, seeds))}", f"device={device}", f"compute.threads={threads}",
                   "tensorboard=false", "progress=false", f"hydra.sweep.dir={sweep_dir}", *launcher, *overrides]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
        if proc.returncode != 0:
            fail(f"the runner's grid exited {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}")
        import yaml

        found = {}
        for summary_path in Path(sweep_dir).glob("*/summary.json"):
            summary = json.loads(summary_path.read_text())
            seed = yaml.safe_load((summary_path.parent / "config.yaml").read_text())["seed"]
            if summary["status"] != "completed":
                fail(f"the runner's seed {seed} ended {summary['status']}: {summary.get('error')}")
            found[seed] = summary["best_val_acc"]
    missing = [s for s in seeds if s not in found]
    if missing:
        fail(f"the runner's grid left no summary for seeds {missing}")
    return [found[s] for s in seeds]


def replay_runs(root: Path, seeds: list[int], epochs: int, threads: int, jobs: int) -> tuple[list[float], list[float]]:
    """bench/fidelity_replay.py once per seed: (course loop, runner on the course loop's order)."""
    def one(seed: int) -> dict:
        return run_json([sys.executable, str(REPLAY), str(root), "--epochs", str(epochs), "--seed", str(seed),
                         "--threads", str(threads)], threads)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        rows = list(pool.map(one, seeds))
    return [r["course_best_val_acc"] for r in rows], [r["runner_best_val_acc"] for r in rows]


def compare(course: list[float], runner: list[float]) -> dict:
    """Means, sample standard deviations, Welch's and the paired t-test (two-sided)."""
    from scipy import stats

    out = {"course_mean": statistics.mean(course), "runner_mean": statistics.mean(runner),
           "course_std": statistics.stdev(course) if len(course) > 1 else 0.0,
           "runner_std": statistics.stdev(runner) if len(runner) > 1 else 0.0,
           "runner_lower": sum(r < c for c, r in zip(course, runner)),
           "runner_higher": sum(r > c for c, r in zip(course, runner))}
    # A test needs spread: with one seed, or every value equal, it is undefined (None).
    if len(course) > 1 and (out["course_std"] > 0 or out["runner_std"] > 0):
        welch = stats.ttest_ind(runner, course, equal_var=False)
        out.update(welch_t=float(welch.statistic), welch_p=float(welch.pvalue))
    differences = [r - c for c, r in zip(course, runner)]
    if len(course) > 1 and statistics.stdev(differences) > 0:
        paired = stats.ttest_rel(runner, course)
        out.update(paired_t=float(paired.statistic), paired_p=float(paired.pvalue))
    return out


def report(seeds: list[int], course: list[float], runner: list[float], runner_name: str) -> dict:
    figures = compare(course, runner)
    print(f"{'seed':>6} {'course loop':>12} {runner_name:>12} {'difference':>11}")
    for seed, c, r in zip(seeds, course, runner):
        print(f"{seed:>6} {c:>12.2f} {r:>12.2f} {r - c:>+11.2f}")
    n = len(seeds)
    print(f"course loop: {figures['course_mean']:.2f} ± {figures['course_std']:.2f} (n={n})")
    print(f"{runner_name}: {figures['runner_mean']:.2f} ± {figures['runner_std']:.2f} (n={n})")
    print(f"{runner_name} lower for {figures['runner_lower']} of {n} seeds, higher for {figures['runner_higher']}")
    if "welch_t" in figures:
        verdict = "a difference" if figures["welch_p"] < 0.05 else "no difference"
        print(f"Welch's t-test: t = {figures['welch_t']:.2f}, p = {figures['welch_p']:.3f} ({verdict} at the 5% level)")
    else:
        print("Welch's t-test: undefined (needs two seeds and some spread)")
    if "paired_t" in figures:
        print(f"paired by seed (same initial weights): t = {figures['paired_t']:.2f}, p = {figures['paired_p']:.3f}")
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=10, help="how many seeds: --first-seed, --first-seed + 1, ...")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every run, both sides")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once (each with --threads threads)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto, both sides (--replay: CPU only)")
    p.add_argument("--root", type=Path, default=None, help="default: bench/data/fidelity_<classes>c_<train>_<val>")
    p.add_argument("--replay", action="store_true", help="the runner on the course loop's own order")
    p.add_argument("overrides", nargs="*", help="extra runner overrides, e.g. compute.channels_last=false")
    a = p.parse_args()
    if min(a.train_images, a.val_images, a.classes, a.epochs, a.seeds, a.threads, a.jobs) < 1:
        fail("--train-images, --val-images, --classes, --epochs, --seeds, --threads and --jobs must be at least 1")
    if a.train_images % a.classes or a.val_images % a.classes:
        fail(f"--train-images {a.train_images} and --val-images {a.val_images} must be multiples of "
             f"--classes {a.classes} (the same number of images per class)")
    if a.replay and (a.device != "cpu" or a.overrides):
        fail("--replay trains on the CPU at the runner's defaults: drop --device and the runner overrides")
    root = (a.root or REPO / "bench" / "data" / f"fidelity_{a.classes}c_{a.train_images}_{a.val_images}").absolute()
    ensure_miniplaces(root, a.train_images // a.classes, a.val_images // a.classes, a.classes)
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    print(f"data: {root} ({a.train_images} train / {a.val_images} val images, {a.classes} classes); LeNet, "
          f"batch 32, lr 0.001, {a.epochs} epochs, seeds {seeds[0]}..{seeds[-1]}, {a.threads} thread(s) a run, "
          f"{a.jobs} run(s) at once, device {a.device}{', replay' if a.replay else ''}", flush=True)
    if a.replay:
        course, runner = replay_runs(root, seeds, a.epochs, a.threads, a.jobs)
        name = "runner (replay)"
    else:
        course = course_runs(root, seeds, a.epochs, a.threads, a.jobs, a.device)
        runner = runner_grid(root, seeds, a.epochs, a.threads, a.jobs, a.device, a.classes, a.overrides)
        name = "runner"
    figures = report(seeds, course, runner, name)
    print(json.dumps({"seeds": seeds, "course": course, "runner": runner, "replay": a.replay, **figures}))


if __name__ == "__main__":
    main()
