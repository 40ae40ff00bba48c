"""Fused sweeps (issue 10): K trials of one model trained as one step with torch.func.

`stack.py` holds the K models' parameters as stacked tensors; `rng.py` gives each trial its own
random stream; `loop.py` is the fused epoch loop; `groups.py` decides which jobs can fuse;
`launcher.py` is the Hydra launcher `hydra/launcher=fused`.
"""
