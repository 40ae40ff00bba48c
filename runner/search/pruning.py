"""Pruning, job side: a trial's job reports its validation accuracy every epoch and stops when told.

The sweeper (runner/search/sweeper.py) runs each trial as a Hydra job and sets two environment
variables for it (`hydra.job.env_set`: Hydra sets them for the job's run only, in whichever
process or machine the launcher runs it): the trial number and the study name. With a pruner configured
(`hydra/sweeper/pruner=median|successive_halving|hyperband|threshold`), the job opens the study
from the same storage, wraps its own RUNNING trial in an `optuna.trial.Trial` and, after each
epoch, calls `report()` and `should_prune()`. Optuna keeps no pruner in the storage, so the job
builds the configured one itself; Optuna's pruners decide from the intermediate values stored in
the study, which every job shares. The job then ends with status `pruned`; the sweeper tells
Optuna PRUNED (Optuna's own `TrialPruned` path would end as FAIL through Hydra's job runner).

Hydra's grid sweeper and plain runs have no trial: `trial_pruner(...)` returns None and the
training loop runs as it always has.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from hydra.utils import instantiate
from omegaconf import DictConfig

from runner.trust.allowed import OPTUNA_STUDY_ENV, OPTUNA_TRIAL_ENV, PRUNER_TARGETS

log = logging.getLogger("runner")

STOP = "stop"
TRIAL_ENV, STUDY_ENV = OPTUNA_TRIAL_ENV, OPTUNA_STUDY_ENV
# The `none` pruner: nothing to report to, so a job does not even open the study.
NO_PRUNER = "optuna.pruners.NopPruner"

EpochEnd = Callable[[int, dict[str, float]], "str | None"]


def wants_pruning(pruner_cfg: Any) -> bool:
    """True for a pruner config that can stop a trial (not null, not the `none` pruner)."""
    return isinstance(pruner_cfg, DictConfig) and pruner_cfg.get("_target_") not in (None, NO_PRUNER)


def build_pruner(pruner_cfg: DictConfig) -> Any:
    return instantiate(pruner_cfg, _execution_whitelist_=PRUNER_TARGETS)


class ReportToTrial:
    """`epoch_end` hook for runner.run.train: report the run's objective (val_acc or val_robust_acc) at
    step `epoch`; "stop" when the pruner says so."""

    def __init__(self, trial: Any, metric: str = "val_acc") -> None:
        self.trial = trial
        self.metric = metric

    def __call__(self, epoch: int, row: dict[str, float]) -> str | None:
        self.trial.report(row[self.metric], epoch)
        if self.trial.should_prune():
            log.info("trial %d pruned by %s after epoch %d (%s %.2f)", self.trial.number,
                     type(self.trial.study.pruner).__name__, epoch, self.metric, row[self.metric])
            return STOP
        return None


def trial_pruner(sweeper_cfg: DictConfig | None, metric: str = "val_acc") -> ReportToTrial | None:
    """The epoch hook for the trial this job runs, or None when there is no trial or no pruner.

    `sweeper_cfg` is the job's `hydra.sweeper` node (storage and pruner); the trial number and the
    study name, as the sweeper resolved it, come from the environment the sweeper set for this job.
    """
    number = os.environ.get(TRIAL_ENV)
    if sweeper_cfg is None or number is None or not wants_pruning(sweeper_cfg.get("pruner")):
        return None
    import optuna

    from runner.search.storage import job_storage

    storage = job_storage(sweeper_cfg.get("storage"))
    if storage is None:
        raise RuntimeError("a pruner needs a persistent storage: set hydra.sweeper.storage to a URL")
    study = optuna.load_study(study_name=os.environ[STUDY_ENV], storage=storage,
                              sampler=optuna.samplers.RandomSampler(), pruner=build_pruner(sweeper_cfg.pruner))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    return ReportToTrial(optuna.trial.Trial(study, trial_id), metric)
