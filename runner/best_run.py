"""best.json: a sweep's best run, its overrides, and the command that trains it again.

The same form for a grid (written by the collector) and an Optuna search (written by
runner/optuna_report.py, which adds the study's own fields): best_value, best_params,
best_job_num, best_run_dir, best_status, best_overrides, command, statuses.

The command is the run's own command-line overrides (Hydra's `.hydra/overrides.yaml`):
`hparams_search=...` / `experiment=...` stay in it, because such a file may set run keys as well
as the search; without `-m` the search settings are ignored and one run trains. `resume=` is
left out: a resumed run equals an uninterrupted one (tested in tests/test_train.py).
"""

from __future__ import annotations

import logging
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from common.io import atomic_write_json

log = logging.getLogger("runner.collect")

# Overrides that say how a run was started, not what it trains.
NOT_REPEATED = ("resume",)


def read_overrides(run_dir: str | Path) -> list[str]:
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def repeat_record(run_dir: str | Path) -> dict[str, Any]:
    """The run's overrides and the `python -m runner ...` command that repeats it."""
    overrides = [o for o in read_overrides(run_dir) if o.lstrip("+~").split("=")[0] not in NOT_REPEATED]
    record: dict[str, Any] = {"best_overrides": overrides,
                              "command": " ".join(["python -m runner", *map(shlex.quote, overrides)])}
    note = _parallel_note(Path(run_dir))
    if note:
        record["command_note"] = note
    return record


def _parallel_note(run_dir: Path) -> str | None:
    """A trial run beside others with compute.threads=auto used fewer threads than a lone run
    will, and a different thread count changes floating-point summation order."""
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    config = run_dir / "config.yaml"
    if not hydra_yaml.exists() or not config.exists():
        return None
    launcher = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("launcher", {}) or {}
    n_jobs = launcher.get("n_jobs")
    threads = ((yaml.safe_load(config.read_text()) or {}).get("compute") or {}).get("threads")
    if "joblib" in str(launcher.get("_target_", "")) and n_jobs not in (None, 1) and str(threads) == "auto":
        return (f"ran as one of {n_jobs} parallel trials with compute.threads=auto (the cores shared among them); "
                "add compute.threads=<cores/n_jobs> to repeat its arithmetic exactly")
    return None


def objective_metric(table: pd.DataFrame) -> str:
    """The summary column the runs were judged by: best_<objective> when every run has the same
    `objective` (val_acc | val_robust_acc, what each returned to its sweeper), else best_val_acc."""
    from runner.collect import read_config

    objectives = {read_config(Path(d)).get("objective", "val_acc") for d in table["run_dir"]}
    metric = f"best_{objectives.pop()}" if len(objectives) == 1 else "best_val_acc"
    return metric if metric in table.columns else "best_val_acc"


def best_row(table: pd.DataFrame, metric: str = "best_val_acc") -> pd.Series | None:
    """The run with the highest `metric`, completed runs first; the first in launch order on a tie."""
    scored = table[table[metric].notna()]
    if scored.empty:
        return None
    completed = scored[scored["status"] == "completed"]
    pool = completed if not completed.empty else scored
    return pool.loc[pool[metric].astype(float).idxmax()]


def best_record(table: pd.DataFrame, key_columns: list[str]) -> dict[str, Any]:
    """best.json's content for a collected table (a grid, a search, or several merged)."""
    metric = objective_metric(table)
    row = best_row(table, metric)
    record: dict[str, Any] = {"metric": metric, "direction": "maximize", "best_value": None,
                              "best_params": None, "best_job_num": None, "best_run_dir": None, "best_status": None,
                              "best_epoch": None, "best_overrides": None, "command": None}
    if row is not None:
        params = {k: _plain(row[k]) for k in key_columns}
        record.update(best_value=float(row[metric]), best_params=params, best_job_num=_plain(row["job"]),
                      best_run_dir=str(Path(row["run_dir"]).resolve()), best_status=row["status"],
                      best_epoch=_plain(row["best_epoch"]))
        if "origin" in row:
            record["best_origin"] = row["origin"]
        record.update(repeat_record(row["run_dir"]))
    record["runs"] = len(table)
    record["statuses"] = dict(Counter(str(s) for s in table["status"]))
    return record


def write_best(table: pd.DataFrame, out: Path, key_columns: list[str]) -> dict[str, Any]:
    """Write out/best.json, except over an Optuna study's own (it has the same fields and the study's)."""
    path = out / "best.json"
    if path.exists():
        try:
            existing = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            existing = None
        if isinstance(existing, dict) and "study_name" in existing:
            log.info("%s is the Optuna study's: kept", path)
            return existing
    record = best_record(table, key_columns)
    atomic_write_json(path, record)
    return record


def _plain(value: Any) -> Any:
    """A table cell as JSON: numpy scalars as Python numbers, missing as null."""
    if value is None or (not isinstance(value, (list, tuple, str)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value
