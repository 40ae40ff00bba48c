"""sweep-runner's Ray launcher as a Hydra plugin: `hydra/launcher=runner_ray` (runner/sweep/ray_launcher.py)."""
