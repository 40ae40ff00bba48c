"""sweep-runner's resumable Optuna sweeper as a Hydra plugin: `hydra/sweeper=runner_optuna` (runner/search/sweeper.py)."""
