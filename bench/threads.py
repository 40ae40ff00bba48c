"""compute.threads on an idle and on a busy CPU: wall time of the default run for each setting.

    python bench/threads.py                      # epochs=3, threads auto/1/2, idle and busy
    python bench/threads.py --epochs 10 --repeats 2 --threads auto,1,2 --wait-policy unset,passive
    python bench/threads.py --epochs 1 --threads auto,1 --wait-policy unset,passive-nospin \
        dataset=miniplaces dataset.root=bench/data/miniplaces_fused batch_size=8   # runner overrides

Runs `python -m runner epochs=N tensorboard=false compute.threads=T` as a user would (a fresh
process each time), first on the machine as it is ("idle"), then with one CPU-bound hog
process per core started by this script ("busy", like other jobs sharing a laptop). Prints the
wall time and best validation accuracy of each. `--wait-policy` sets OMP_WAIT_POLICY for the
run: unset (what `python -m runner` sets itself, PASSIVE), passive, active, or libgomp (the
OpenMP library's own default, which spins a while before sleeping: the runner before it set
PASSIVE). On a machine shared with other work the "idle" rows are not idle: repeat, compare medians.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOG = "while True: pass"


def run_once(epochs: int, threads: str, wait_policy: str, extra: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if wait_policy == "passive-nospin":  # the runner's setting before GOMP_SPINCOUNT: sleep at once
        env["OMP_WAIT_POLICY"], env["GOMP_SPINCOUNT"] = "PASSIVE", "0"
    elif wait_policy == "libgomp":  # the library's own default, as before runner/__init__.py set PASSIVE:
        env["OMP_WAIT_POLICY"] = ""  # an empty value is kept by the runner and read by libgomp as unset
    elif wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = wait_policy
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "runner", f"epochs={epochs}", "tensorboard=false",
                               "progress=false", f"compute.threads={threads}", f"hydra.run.dir={run_dir}", *extra],
                              cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed (threads={threads}):\n{proc.stderr[-2000:]}")
    acc = re.search(r"best val acc: ([\d.]+)", proc.stdout)
    return wall, acc.group(1) if acc else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", default="auto,1,2", help="comma-separated compute.threads values")
    parser.add_argument("--wait-policy", default="unset", help="comma-separated: unset (the runner's own: PASSIVE with a short spin), "
                        "passive-nospin (PASSIVE, GOMP_SPINCOUNT=0: the runner before), passive, active, libgomp")
    parser.add_argument("--hogs", default=None, type=int, help="busy processes in the busy phase (default: one per core)")
    args, extra = parser.parse_known_args()  # anything else goes to the runner (dataset=..., batch_size=...)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a killed bench still stops its hog processes
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    hog_count = cores if args.hogs is None else args.hogs
    print(f"{cores} cores; load average before: {os.getloadavg()[0]:.2f}; epochs={args.epochs}, "
          f"repeats={args.repeats}")
    print("| machine | compute.threads | OMP_WAIT_POLICY | wall s (median) | all walls | best val acc |")
    print("| --- | --- | --- | ---: | --- | --- |")
    for phase in ("idle", "busy"):
        hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hog_count if phase == "busy" else 0)]
        try:
            for policy in args.wait_policy.split(","):
                for threads in args.threads.split(","):
                    results = [run_once(args.epochs, threads, policy, extra) for _ in range(args.repeats)]
                    walls = [w for w, _ in results]
                    label = phase if phase == "idle" else f"busy ({hog_count} hogs)"
                    print(f"| {label} | {threads} | {policy} | {statistics.median(walls):.1f} | "
                          f"{', '.join(f'{w:.1f}' for w in walls)} | {results[-1][1]} |", flush=True)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()


if __name__ == "__main__":
    main()
