"""Fused sweeps: K trials of one model trained as one step with torch.func.

`stack.py` holds the K models' parameters (and batch-norm buffers) as stacked tensors; `rng.py`
gives each trial its own random stream; `loop.py` is the fused epoch loop; `prefix.py` lets
trials differing only in epochs share one trajectory; `groups.py` decides which jobs can fuse;
`train_group.py` takes a group from its claimed folders to values; `launcher.py` is the Hydra
launcher `hydra/launcher=fused`.
"""
