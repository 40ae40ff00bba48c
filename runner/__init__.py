"""sweep-runner: Hydra-configured image-classification runs, sweeps and result tables."""

import os

# OpenMP threads that wait at a barrier sleep instead of spinning: on a CPU shared with other
# work, spinning threads steal the cores the others (and our own late thread) need, so a
# default 2-thread run fell far behind a 1-thread one (bench/threads.py). libgomp reads this
# once, when torch loads it, so it is set here, before anything under runner/ imports torch.
# A value the user exported is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ...but not at once: PASSIVE alone sleeps a thread at every barrier, and a small model's step is
# hundreds of parallel regions microseconds apart, so each one paid a wake-up, and a small
# model's step on 2 threads lost to the same step on 1 even on an idle machine. Spinning ~1 ms
# first (libgomp's default is ~3 ms, PASSIVE's 0) keeps the threads awake within a step and still
# yields the core between steps (bench/threads.py; figures in docs/benchmarks.md).
os.environ.setdefault("GOMP_SPINCOUNT", "100000")
