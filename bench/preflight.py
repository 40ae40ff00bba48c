#!/usr/bin/env python3
"""What the trust check before Hydra (runner/trust/preflight.py) adds to a command's start-up.

usage: PYTHONPATH=. python bench/preflight.py [--repeat 5] [runner overrides ...]

Runs `python -m runner <overrides>` in this process (as `python -m` does, so the config is found
the same way), `--repeat` times, and stops it right after the preflight: the preflight composes
the config as Hydra will (each grid job's too, those that differ in what the check can see), checks
it, and nothing runs. Prints the seconds the preflight took, the first (cold) call and the median
of the rest. Hydra composes the command's config once more after it in a real run; that cost is
Hydra's own, not the check's.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time

import runner.trust.preflight as preflight_module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args, overrides = parser.parse_known_args()
    timings: list[float] = []
    real = preflight_module.preflight

    def timed(*a, **k):
        started = time.perf_counter()
        try:
            real(*a, **k)
        finally:
            timings.append(time.perf_counter() - started)
        raise SystemExit(0)  # checked and allowed: stop before Hydra runs anything

    preflight_module.preflight = timed
    for _ in range(args.repeat):
        sys.argv = ["runner", *overrides]
        try:
            runpy.run_module("runner", run_name="__main__")
        except SystemExit as e:
            assert e.code == 0, f"the preflight refused the command (exit {e.code}): give one it allows"
    rest = sorted(timings[1:]) or timings
    print(f"preflight {' '.join(overrides) or '(defaults)'}: first {timings[0]:.3f} s, "
          f"median of the rest {rest[len(rest) // 2]:.3f} s ({len(timings)} calls)")


if __name__ == "__main__":
    main()
