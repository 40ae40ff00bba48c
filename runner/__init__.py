"""sweep-runner: Hydra-configured image-classification runs, sweeps and result tables."""

import os

# OpenMP threads that wait at a barrier sleep instead of spinning: on a CPU shared with other
# work, spinning threads steal the cores the others (and our own late thread) need, which made
# a default 2-thread run 4-5x slower than a 1-thread one (bench/threads.py). libgomp reads this
# once, when torch loads it, so it is set here, before anything under runner/ imports torch.
# A value the user exported is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ...but not at once: PASSIVE alone sleeps a thread at every barrier, and a small model's step is
# hundreds of parallel regions microseconds apart, so each one paid a wake-up. On an idle 2-core
# machine that made a LeNet step at batch 8 2.4x slower on 2 threads than on 1 (a MiniPlaces epoch
# 5.8 s against 2.7 s). Spinning ~1 ms first (libgomp's default is ~3 ms, PASSIVE's 0) keeps the
# threads awake within a step and still yields the core between steps (bench/threads.py).
os.environ.setdefault("GOMP_SPINCOUNT", "100000")
