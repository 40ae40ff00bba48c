"""What pruning saves: the same Optuna search with and without a pruner, side by side.

    python bench/pruning.py                          # 40 trials, hyperband vs none, digits, 10 epochs
    python bench/pruning.py --trials 20 --pruner median --out /tmp/bench_pruning

Runs `python -m runner -m hparams_search=lenet_optuna` twice into OUT/none and OUT/<pruner>
(the same seeded sampler, one trial at a time), then prints, for each: the best validation
accuracy, the epochs trained in total (sum of `epochs_done` in results.csv), how many trials were
pruned, and the wall time. Re-running with the same OUT resumes (and so re-uses) both searches;
delete OUT to measure again. `--parallel` runs the two searches at once (the figures other than
wall time don't depend on it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def command(sweep_dir: Path, trials: int, pruner: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "runner", "-m", "hparams_search=lenet_optuna", f"hydra.sweep.dir={sweep_dir}",
            f"hydra.sweeper.n_trials={trials}", f"hydra/sweeper/pruner={pruner}", "tensorboard=false",
            "progress=false", *extra]


def figures(sweep_dir: Path) -> dict[str, float]:
    table = pd.read_csv(sweep_dir / "results.csv")
    return {"trials": len(table), "pruned": int((table["status"] == "pruned").sum()),
            "best_val_acc": float(table["best_val_acc"].max()), "epochs": int(table["epochs_done"].sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--pruner", default="hyperband", help="a file of hydra_plugins/sweep_runner_sweeper/conf/hydra/sweeper/pruner/")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_pruning"))
    parser.add_argument("--parallel", action="store_true", help="run both searches at once")
    parser.add_argument("overrides", nargs="*", help="more overrides for both searches, e.g. epochs=20")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {name: args.out / name for name in ("none", args.pruner)}
    started, procs, walls = {}, {}, {}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, sweep_dir in runs.items():
        log = open(args.out / f"{name}.log", "w")
        started[name] = time.perf_counter()
        procs[name] = subprocess.Popen(command(sweep_dir, args.trials, name, args.overrides), cwd=ROOT, env=env,
                                       stdout=log, stderr=subprocess.STDOUT)
        if not args.parallel:
            procs[name].wait()
            walls[name] = time.perf_counter() - started[name]
    while len(walls) < len(procs):  # --parallel: each search's own end
        for name, proc in procs.items():
            if name not in walls and proc.poll() is not None:
                walls[name] = time.perf_counter() - started[name]
        time.sleep(0.5)
    for name, proc in procs.items():
        if proc.returncode != 0:
            print(f"error: the {name} search failed; see {args.out / (name + '.log')}", file=sys.stderr)
            return 1

    rows = {name: {**figures(sweep_dir), "wall_s": round(walls[name], 1)} for name, sweep_dir in runs.items()}
    print(pd.DataFrame(rows).T.to_markdown())
    base, pruned = rows["none"], rows[args.pruner]
    print(f"\n{args.pruner}: best accuracy {pruned['best_val_acc'] - base['best_val_acc']:+.2f} points, "
          f"{pruned['epochs']} of {base['epochs']} epochs ({100 * pruned['epochs'] / base['epochs']:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
