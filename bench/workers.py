"""Trials per minute with 1, 2 and 4 workers on one Optuna study in PostgreSQL.

    python bench/workers.py                       # 24 trials of 1 epoch each, 1, 2 and 4 workers
    python bench/workers.py --trials 24 --workers 1 2 4 8 epochs=2

Starts a throwaway PostgreSQL server (tests/postgres_server.py: initdb and pg_ctl, as the
`postgres` user when run as root), then for each worker count runs that many copies of the same
`python -m runner -m hparams_search=lenet_optuna hydra.sweeper.storage=postgresql://...` command
on a fresh study and sweep dir, and times from the first start to the last exit. Each worker
trains with one thread (compute.threads=1), so N workers use N cores: past the machine's core
count more workers only share them.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from postgres_server import temporary_postgres  # noqa: E402


def run(url: str, workers: int, trials: int, sweep_dir: Path, extra: list[str]) -> float:
    study = f"bench_{workers}"
    cmd = [sys.executable, "-m", "runner", "-m", "hparams_search=lenet_optuna", f"hydra.sweep.dir={sweep_dir}",
           f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={trials}",
           "epochs=1", "tensorboard=false", "progress=false", "compute.threads=1", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"error: a worker failed; run by hand: {' '.join(cmd)}")
    wall = time.perf_counter() - started
    done = len(pd.read_csv(sweep_dir / "results.csv"))
    if done != trials:
        raise SystemExit(f"error: {done} trials in {sweep_dir}, expected {trials}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("overrides", nargs="*", help="more overrides for every worker, e.g. epochs=2")
    args = parser.parse_args()
    rows = []
    with temporary_postgres() as url, tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            wall = run(url, n, args.trials, Path(tmp) / f"workers{n}", args.overrides)
            rows.append({"workers": n, "trials": args.trials, "wall_s": round(wall, 1),
                         "trials_per_min": round(60 * args.trials / wall, 1)})
            print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False))
    print(f"\n{os.cpu_count()} CPU cores; wall time from the first worker's start to the last one's exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
