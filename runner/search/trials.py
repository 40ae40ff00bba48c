"""How a trial ends: a job's outcome told to Optuna, and a trial a stopped worker left RUNNING closed.

Plain functions used by the sweeper's loop (runner/search/sweeper.py). A job's own summary.json
is the record of what it did: its status (completed, diverged, failed, pruned, interrupted) goes
into the trial's user attributes, and the trial's state follows from it.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from runner.config.objective import as_values, objective_value, recorded_objectives
from runner.record.run_folder import ENDED, Status, read_summary
from runner.search.storage import mark_interrupted

log = logging.getLogger("runner.search.sweeper")

# A RUNNING trial with no owner attribute older than this was left by a killed sweeper (see _owner_gone).
OWNERLESS_GRACE_S = 60.0


def record_result(study: Any, trial: Any, ret: JobReturn) -> bool:
    """Tell Optuna how a job ended; True if it gave a usable value.

    A value that is None (the job failed, or diverged before its first good epoch), NaN or
    infinite, or a job that raised, becomes a FAIL trial instead of ending the search (the
    plugin raises on the first one with its default max_failure_rate 0, and a NaN told as
    COMPLETE makes Optuna raise). A diverged job with a best epoch before the NaN is COMPLETE
    with that value: a real, if poor, result the sampler should learn from. The job's own
    status and error (summary.json) go into the trial's user attributes either way.
    """
    from optuna.trial import TrialState

    run_dir = _job_dir(ret) or trial.user_attrs.get("run_dir")
    if run_dir:
        trial.set_user_attr("run_dir", str(Path(run_dir).resolve()))
    summary = _read_summary(run_dir) or {}
    if ret.status == JobStatus.COMPLETED:
        value, error = as_values(ret._return_value), summary.get("error")  # [v], or one per objective
        status = summary.get("status", Status.COMPLETED if value is not None else Status.FAILED)
    else:  # the task raised (main() catches its own errors in a sweep, so rarely)
        value, error = None, f"{type(ret._return_value).__name__}: {ret._return_value}"
        status = summary.get("status", Status.FAILED)
    trial.set_user_attr("status", status)
    if error:
        trial.set_user_attr("error", str(error)[:500])
    if status == Status.PRUNED:  # Optuna takes the last reported value as a pruned trial's value
        _tell(study, trial.number, state=TrialState.PRUNED)
        log.info("Trial %d (job %s): pruned after %s epochs, params %s", trial.number,
                 trial.user_attrs.get("job_num"), summary.get("epochs_done"), dict(trial.params))
        return True
    if value is not None and len(value) != len(study.directions):  # the study's objectives are not the run's
        value, error = None, f"the run returned {len(value)} value(s) for a study of {len(study.directions)} objectives"
        trial.set_user_attr("error", error)
    if value is None:
        _tell(study, trial.number, state=TrialState.FAIL)
        log.warning("Trial %d (job %s) %s: recorded as failed, the search goes on%s", trial.number,
                    trial.user_attrs.get("job_num"), status, f" ({error})" if error else "")
        return False
    _tell(study, trial.number, state=TrialState.COMPLETE, values=value)
    log.info("Trial %d (job %s): %s, value %s, params %s", trial.number, trial.user_attrs.get("job_num"),
             status, ", ".join(f"{v:.4g}" for v in value), dict(trial.params))
    return True


def recover_trial(study: Any, t: Any) -> None:
    """Close a trial a stopped worker left RUNNING (see ResumableOptunaSweeper._recover_stale)."""
    from optuna.trial import TrialState

    run_dir = t.user_attrs.get("run_dir")
    summary = _read_summary(run_dir)
    storage = study._storage  # user attributes of a trial we don't hold a Trial object for
    if summary is not None and summary.get("status") in ENDED:
        value = as_values(objective_value(recorded_objectives(run_dir), summary))  # what the run would have returned
        storage.set_trial_user_attr(t._trial_id, "status", summary["status"])
        if summary.get("error"):
            storage.set_trial_user_attr(t._trial_id, "error", str(summary["error"]))
        if summary["status"] == Status.PRUNED:
            study.tell(t.number, state=TrialState.PRUNED)
        else:
            _tell(study, t.number, values=value, state=TrialState.FAIL if value is None else TrialState.COMPLETE)
        log.info("Trial %d (job %s) had ended (%s) but was left RUNNING: recorded", t.number,
                 t.user_attrs.get("job_num"), summary["status"])
        return
    storage.set_trial_user_attr(t._trial_id, "status", Status.INTERRUPTED)
    storage.set_trial_user_attr(t._trial_id, "retried", True)
    study.tell(t.number, state=TrialState.FAIL)  # raises if another worker got there first
    mark_interrupted(run_dir, f"its sweeper stopped; trial {t.number} was failed and its parameters re-queued")
    if t.params:
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    log.info("Trial %d (job %s) was left RUNNING by a stopped sweep: failed, its parameters run again",
             t.number, t.user_attrs.get("job_num"))


def _tell(study: Any, number: int, state: Any, values: list[float] | None = None) -> None:
    """study.tell, tolerating GridSampler's study.stop() once the grid is used up (as the plugin does)."""
    try:
        study.tell(number, state=state, values=values)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def _owner_gone(owner: Any, started: datetime.datetime | None) -> bool:
    """True when `owner` (host:pid) is a process of this host that no longer runs.

    A trial with no owner yet was killed between ask and its first attribute, or is being set
    up right now by another process on a shared study: it counts as gone once it is older than
    OWNERLESS_GRACE_S (a live sweeper sets the owner milliseconds after asking).
    """
    if not owner:
        if started is None:
            return True
        age = datetime.datetime.now(started.tzinfo) - started
        return age.total_seconds() > OWNERLESS_GRACE_S
    host, _, pid = str(owner).rpartition(":")
    if host != socket.gethostname():
        return False
    if not pid.isdigit() or int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _job_dir(ret: JobReturn) -> str | None:
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except Exception:
        return None


def _read_summary(run_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    return read_summary(Path(run_dir)) if run_dir else None
