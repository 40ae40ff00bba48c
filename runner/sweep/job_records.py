"""What each job of a sweep came to, and what a run was launched with.

A sweep job refused or failed outside training (a config check, a folder that holds a finished
run of another config) may have no run folder of its own to record that in: the folder can hold
another run that must stay as it is. Such a job writes `SWEEP_DIR/.jobs/<job num>.json`
(atomically): its job number, run folder, overrides, status (refused | failed) and reason. A grid
sweep clears these records when it starts (runner/sweep/callbacks.py); an Optuna sweep's job numbers
are never reused, so its records stay. The collector counts a sweep's jobs from its run folders
and these records (a record stands for its job number), and a sweep with any job failed or
refused ends with a non-zero exit status.

`launched_as` is what a run records of itself in summary.json when it starts training: its
command-line overrides and job number. The command that repeats a run is built from these, not
from Hydra's `.hydra/overrides.yaml`, which every later job sent to the same folder rewrites.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from common.io import atomic_write_json
from runner.record.run_folder import HYDRA_DIR, HYDRA_FILE, NO_VALUE, OVERRIDES_FILE, SUMMARY_FILE, Status

log = logging.getLogger("runner")

JOBS_DIR = ".jobs"
# The order statuses are listed in: a result first, then what may still become one, then none.
ORDER = (Status.COMPLETED, Status.DIVERGED, Status.PRUNED, Status.INTERRUPTED, Status.RUNNING, Status.FAILED,
         Status.REFUSED)


def write_job_record(hydra_cfg: DictConfig, status: str, reason: str) -> None:
    """Record that the current sweep job (Hydra's config of the job) ended `status` for `reason`."""
    try:
        sweep_dir = Path(str(hydra_cfg.sweep.dir))
        num = int(hydra_cfg.job.num)
        record = {"job_num": num, "run_dir": str(Path(str(hydra_cfg.runtime.output_dir)).resolve()),
                  "overrides": [str(o) for o in hydra_cfg.overrides.task], "status": status,
                  "reason": str(reason), "written_at": time.time()}
        (sweep_dir / JOBS_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_json(sweep_dir / JOBS_DIR / f"{num}.json", record)
    except Exception as e:  # recording must never turn one job's refusal into the sweep's end
        log.warning("could not record this job's outcome (%s): %s", status, e)


def read_job_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep dir's job records in job order; a malformed one is warned about and skipped."""
    from runner.results.read import read_json_object, warn

    folder = Path(sweep_dir) / JOBS_DIR
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        record = read_json_object(path)
        if record is None:
            continue
        if not isinstance(record.get("job_num"), int) or record.get("status") not in NO_VALUE:
            warn(path, "not a job record (job_num, status failed|refused); left out")
            continue
        records.append(record)
    return sorted(records, key=lambda r: r["job_num"])


def with_job_records(runs: list[Path], outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run folder with no summary of its own whose job was refused or failed says so (status and
    reason from the job's record), not `running`."""
    records: dict[Path, dict[str, dict[str, Any]]] = {}
    out = []
    for run, outcome in zip(runs, outcomes):
        if outcome.get("status") == Status.RUNNING and not (run / SUMMARY_FILE).exists():
            if run.parent not in records:
                records[run.parent] = {r.get("run_dir"): r for r in read_job_records(run.parent)}
            record = records[run.parent].get(str(run.resolve()))
            if record is not None:
                outcome = {**outcome, "status": record["status"], "error": record.get("reason")}
        out.append(outcome)
    return out


def clear_job_records(sweep_dir: str | Path) -> None:
    """Remove an earlier sweep's job records (a grid re-run into its sweep dir runs its jobs anew)."""
    from common.io import remove_stale_temp_files

    folder = Path(sweep_dir) / JOBS_DIR
    if not folder.is_dir():
        return
    for path in folder.glob("*.json"):
        path.unlink(missing_ok=True)
    remove_stale_temp_files(folder)


def count_jobs(sweep_dir: Path) -> Counter:
    """Each job of the sweep once, by its final state: its run folder's, unless a record says more."""
    from runner.results.read import find_runs, job_name, read_outcome

    jobs: dict[Any, str] = {}
    for run in find_runs(Path(sweep_dir)):
        outcome = read_outcome(run)
        num = outcome.get("job_num")
        key = num if isinstance(num, int) else job_name(run)
        jobs[key if isinstance(key, int) else str(run.resolve())] = str(outcome.get("status"))
    for record in read_job_records(sweep_dir):
        # a folder whose own summary says the job did not train (a check inside training) keeps its word
        if jobs.get(record["job_num"]) not in NO_VALUE:
            jobs[record["job_num"]] = record["status"]
    return Counter(jobs.values())


def jobs_line(counts: Counter) -> str:
    """`3 jobs: 0 completed, 3 refused`."""
    names = [s for s in ORDER if s == Status.COMPLETED or counts[s]] + sorted(set(counts) - set(ORDER))
    return f"{sum(counts.values())} jobs: " + ", ".join(f"{counts[s]} {s}" for s in names)


def launched_as(run_dir: Path) -> dict[str, Any]:
    """{"overrides": the run's command-line overrides, "job_num": its number in a sweep}, as Hydra
    launched this run; None where unknown (train() called outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            if Path(hydra_cfg.runtime.output_dir).resolve() == Path(run_dir).resolve():
                num = hydra_cfg.job.get("num") if hydra_cfg.mode == RunMode.MULTIRUN else None
                return {"overrides": [str(o) for o in hydra_cfg.overrides.task], "job_num": num}
    except Exception:  # not Hydra's job: fall back on the folder's .hydra/ files below
        pass
    return _from_hydra_files(Path(run_dir))


def _from_hydra_files(run_dir: Path) -> dict[str, Any]:
    """A fused trial trains after Hydra moved on: its own .hydra/ files, written just before, say it."""
    import yaml

    out: dict[str, Any] = {"overrides": None, "job_num": None}
    try:
        overrides = yaml.safe_load((run_dir / HYDRA_DIR / OVERRIDES_FILE).read_text())
        if isinstance(overrides, list):
            out["overrides"] = [str(o) for o in overrides]
        hydra = (yaml.safe_load((run_dir / HYDRA_DIR / HYDRA_FILE).read_text()) or {}).get("hydra", {})
        if str(hydra.get("mode")) == "MULTIRUN" and isinstance(hydra.get("job", {}).get("num"), int):
            out["job_num"] = hydra["job"]["num"]
    except Exception:
        pass
    return out
