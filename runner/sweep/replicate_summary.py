"""A replicates job's own files, from its replicates' run folders: summary.json and the mean curve.

The job's summary.json has a run's fields, with the objective's column (`best_val_acc`, or
`best_<objective>`) and every other `best_*` value the MEAN over the counted replicates, and a
`replicates` block: n (counted), requested, mean, std (sample, ddof=1; null below 2), and per
replicate its value (null where not counted), seed, status and folder. A replicate counts when it
completed (or was pruned with the job: the pruner stopped them together); a diverged, failed or
interrupted one is excluded and its own folder says why. The job's status: `pruned` if its pruner
stopped it, else `completed` if any replicate completed, else the replicates' failure status.
The job's metrics.csv is the mean curve: per epoch, each column's mean over the replicates still
training at that epoch (a diverged one leaves at its NaN epoch), plus `val_acc_std`.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from runner.config.objective import objective_value, summary_column
from runner.record.run_folder import COUNTED_IN_JOB, SUMMARY_FILE, Status, read_config, read_metrics, read_summary

# With no replicate completed, the job's status is the first of these its replicates hold:
# an unfinished one first, so that running the command again retries the job (runner/sweep/rerun.py).
FAILURE_ORDER = (Status.INTERRUPTED, Status.RUNNING, Status.FAILED, Status.REFUSED, Status.DIVERGED)


def replicate_summary(folder: Path) -> dict[str, Any]:
    """A replicate's summary.json; a replicate that never wrote one (not started) reads as interrupted."""
    if not (folder / SUMMARY_FILE).is_file():
        return {"status": Status.INTERRUPTED, "error": "this replicate did not finish"}
    summary = read_summary(folder)
    return summary if summary is not None else {"status": Status.FAILED, "error": f"{SUMMARY_FILE} is no JSON object"}


def job_status(statuses: list[str]) -> str:
    if Status.PRUNED in statuses:
        return Status.PRUNED
    if Status.COMPLETED in statuses:
        return Status.COMPLETED
    return next((s for s in FAILURE_ORDER if s in statuses), statuses[0] if statuses else Status.FAILED)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def job_summary(objective: str, folders: list[Path], seeds: list[int], started_at: float,
                wall_s: float, launched: dict[str, Any]) -> dict[str, Any]:
    """The job's summary.json from its replicates' (module docstring)."""
    summaries = [replicate_summary(folder) for folder in folders]
    statuses = [str(s.get("status")) for s in summaries]
    counted = [s.get("status") in COUNTED_IN_JOB and objective_value(objective, s) is not None for s in summaries]
    values = [objective_value(objective, s) if ok else None for s, ok in zip(summaries, counted)]
    kept = [v for v in values if v is not None]
    status = job_status(statuses)
    best_keys = sorted({k for s in summaries for k in s if k.startswith("best_") and k != "best_epoch"}
                       | {summary_column(objective), "best_val_acc"})
    summary: dict[str, Any] = {"status": status}
    for key in best_keys:
        summary[key] = _mean([float(s[key]) for s, ok in zip(summaries, counted)
                              if ok and isinstance(s.get(key), (int, float)) and math.isfinite(s[key])])
    first = summaries[0] if summaries else {}
    summary.update(
        best_epoch=None, epochs_done=max((int(s.get("epochs_done") or 0) for s in summaries), default=0),
        params_m=first.get("params_m"),
        train_s=sum(float(s.get("train_s") or 0) for s in summaries),
        val_s=sum(float(s.get("val_s") or 0) for s in summaries), wall_s=wall_s,
        compile_s=sum(float(s.get("compile_s") or 0) for s in summaries), device=first.get("device"),
        resumed_from=None, step_path=first.get("step_path"),
        error=None if status == Status.COMPLETED else next((s.get("error") for s in summaries if s.get("error")), None),
        started_at=started_at, **launched)
    summary["replicates"] = {
        "n": len(kept), "requested": len(folders), "mean": _mean(kept),
        "std": statistics.stdev(kept) if len(kept) >= 2 else None,
        "values": values, "seeds": list(seeds), "statuses": statuses, "folders": [f.name for f in folders]}
    return summary


def mean_curve(folders: list[Path]) -> list[dict[str, float]]:
    """The job's metrics.csv rows: per epoch, the mean over replicates alive then, plus val_acc_std."""
    frames = []
    for folder in folders:
        frame = read_metrics(folder)
        if frame is None:
            continue
        alive = frame["train_loss"].map(lambda v: isinstance(v, (int, float)) and math.isfinite(v))
        frames.append(frame[alive])
    if not frames or all(f.empty for f in frames):
        return []
    rows = pd.concat(frames, ignore_index=True)
    numeric = rows.select_dtypes("number")
    means = numeric.groupby(rows["epoch"]).mean().drop(columns="epoch", errors="ignore")
    means["val_acc_std"] = numeric.groupby(rows["epoch"])["val_acc"].std(ddof=1)
    curve = means.reset_index()
    curve["epoch"] = curve["epoch"].astype(int)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in curve.to_dict("records")]


def filled_config(plain_cfg: dict[str, Any], folders: list[Path]) -> dict[str, Any]:
    """The job's config with what its replicates filled in from the data (a class count left null)."""
    if (plain_cfg.get("dataset") or {}).get("num_classes") is not None:
        return plain_cfg
    for folder in folders:
        stored = read_config(folder)
        classes = (stored.get("dataset") or {}).get("num_classes") if stored is not None else None
        if classes is not None:
            return {**plain_cfg, "dataset": {**plain_cfg["dataset"], "num_classes": classes}}
    return plain_cfg
