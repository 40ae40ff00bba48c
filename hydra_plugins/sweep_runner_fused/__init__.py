"""sweep-runner's fused launcher as a Hydra plugin: `hydra/launcher=fused` (runner/fused/launcher.py)."""
