"""An Optuna search: the resumable sweeper, asking for trials, the study's storage and database,
its search space, how a trial ends, and pruning.
"""
