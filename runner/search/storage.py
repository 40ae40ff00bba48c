"""Where a study lives, and what several workers on one study need from it.

* `study_setup`, `sweeper_storage`: the sweeper's storage, opened under a lock (N workers may
  start at once on a fresh database). A URL becomes Optuna's RDBStorage with a heartbeat
  (`hydra.sweeper.heartbeat_interval`, `grace_period`): every trial a worker runs gets a
  heartbeat thread (Optuna's own), and a trial whose heartbeat stopped (its worker was killed,
  on any machine) is found by `stale_trial_ids` and failed and re-run by a live worker.
* The URL (a sqlite path stays a path), the setup lock and one-line errors: runner/search/db.py.
* `job_storage`: the same storage, opened by a trial's job to report to its trial (pruning).
* `claim_job_dir`: a job folder no other worker can take, even on a shared file system.
* `mark_interrupted`: the summary.json of a job whose worker was killed says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig

from common.errors import ConfigError
from runner.search.db import check_driver, check_url, setting_up, study_url

log = logging.getLogger(__name__)


def sweeper_storage(storage: Any, heartbeat_interval: int | None, grace_period: int | None) -> Any:
    """The storage URL as an Optuna storage; None stays None (in memory).

    Build it through `study_setup`, with the URL from `study_url`: a sqlite path is relative to the
    cwd, like Hydra's sweep dir (hydra.job.chdir=false), and its folder is made there.
    """
    if storage is None:
        return None
    if isinstance(storage, DictConfig):  # runner/trust/targets.py refuses it first; never instantiated here either
        raise ConfigError("hydra.sweeper.storage must be a URL string (e.g. postgresql://user@host/db), "
                          "not an object node")
    import optuna

    url = str(storage)
    check_url(url)  # heartbeat_interval and grace_period: runner.search.study_rules.check_options
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)


@contextlib.contextmanager
def study_setup(url: Any, heartbeat_interval: int | None, grace_period: int | None) -> Iterator[Any]:
    """The sweeper's storage (`sweeper_storage`), yielded while the database's setup lock is held
    (runner/search/db.py): create or load the study, and write what a study's first worker writes,
    inside. Any number of workers may start at the same moment on a fresh database."""
    with setting_up(url) if isinstance(url, str) else contextlib.nullcontext():
        yield sweeper_storage(url, heartbeat_interval, grace_period)


def job_storage(storage: Any) -> Any:
    """The study's storage as a trial's job opens it: no heartbeat (the sweeper owns the trial)."""
    if storage is None:
        return None
    if isinstance(storage, DictConfig):  # runner/trust/targets.py refuses it first; never instantiated here either
        raise ConfigError("hydra.sweeper.storage must be a URL string (e.g. postgresql://user@host/db), "
                          "not an object node")
    import optuna

    from hydra.core.hydra_config import HydraConfig

    # The job resolves the same URL as its sweeper did, sweep dir and all: quote it the same way.
    url = study_url(str(storage), HydraConfig.get().sweep.dir if HydraConfig.initialized() else None)
    check_driver(url)
    # The sweeper created the tables and checked their version: skip both (alembic is slow to load).
    return optuna.storages.RDBStorage(url, skip_table_creation=True, skip_compatibility_check=True)


def stale_trial_ids(study: Any) -> set[int]:
    """RUNNING trials whose worker stopped sending heartbeats (any machine); empty without heartbeats."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return set()
    return set(storage._get_stale_trial_ids(study._study_id))


def heartbeat_enabled(study: Any) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def heartbeat_thread(study: Any, trial_id: int) -> Any:
    """Optuna's heartbeat thread for one trial (a no-op thread when the storage has no heartbeat), started."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    thread = get_heartbeat_thread(trial_id, study._storage)
    thread.start()
    return thread


def claim_job_dir(sweep_dir: Path, start: int) -> tuple[int, Path]:
    """Create the first free numbered job folder from `start` on, exclusively.

    os.mkdir fails if the folder exists, atomically also on NFS, so two workers on one sweep dir
    never get the same folder: the loser moves on to the next number.
    """
    number = start
    while True:
        path = sweep_dir / str(number)
        try:
            os.mkdir(path)
            return number, path
        except FileExistsError:
            number += 1


def mark_interrupted(run_dir: Any, note: str) -> None:
    """Give a killed job's folder a summary.json saying `interrupted` (a SIGKILL leaves none, or a stale
    `running`), with what its metrics.csv shows, so the collector's table has its final state."""
    if not run_dir or not Path(run_dir).is_dir():
        return
    from runner.results.read import read_outcome
    from runner.record.run_folder import Status, record_interrupted

    outcome = read_outcome(Path(run_dir))
    if outcome.get("status") not in (None, Status.RUNNING):
        return  # the job wrote its own ending
    record_interrupted(Path(run_dir), note, outcome)
