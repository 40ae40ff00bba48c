"""sweep-runner: Hydra-configured image-classification runs, sweeps and result tables."""

import os

# OpenMP threads that wait at a barrier sleep instead of spinning: on a CPU shared with other
# work, spinning threads steal the cores the others (and our own late thread) need, which made
# a default 2-thread run 4-5x slower than a 1-thread one (bench/threads.py). libgomp reads this
# once, when torch loads it, so it is set here, before anything under runner/ imports torch.
# A value the user exported is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
