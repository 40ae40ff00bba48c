"""The sweeper's config files (`hydra/sweeper=runner_optuna`, `hydra/sweeper/pruner=...`), on Hydra's search path."""
