"""best.json: a sweep's best run, its overrides, and the command that trains it again.

The same form for a grid (written by the collector) and an Optuna search (written by
runner/optuna_report.py, which adds the study's own fields): best_value, best_params,
best_job_num, best_run_dir, best_status, best_overrides, command, statuses.

The best run is the first of runner/results/ranking.py's order; the command that trains it again comes from
runner/results/repeat_command.py. With several objectives best.json holds the Pareto front instead
(runner/results/pareto_report.py), and with replicates which configs a Welch test can't tell from the
best (runner/results/replicate_compare.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from common.io import atomic_write_json
from runner.results.ranking import best_row, objective_metric, plain_cell, resolved
from runner.results.read import BEST_FILE, printable, read_json_object
from runner.results.repeat_command import repeat_record

log = logging.getLogger("runner.collect")


def best_record(table: pd.DataFrame, key_columns: list[str], metric: str | None = None) -> dict[str, Any]:
    """best.json's content for a collected table (a grid, a search, or several merged)."""
    from runner.results.pareto import FRONT
    from runner.results.pareto_report import front_record

    metric = metric or objective_metric(table)
    if FRONT in table.columns:  # several objectives: the Pareto front instead of one best run
        return {**front_record(table, key_columns), "runs": len(table),
                "statuses": dict(Counter(printable(s) for s in table["status"]))}
    row = best_row(table, metric)
    record: dict[str, Any] = {"metric": metric, "direction": "maximize", "best_value": None,
                              "best_params": None, "best_job_num": None, "best_run_dir": None, "best_status": None,
                              "best_epoch": None, "best_overrides": None, "command": None}
    if row is not None:
        params = {printable(k): plain_cell(row[k]) for k in key_columns}
        record.update(best_value=float(row[metric]), best_params=params, best_job_num=plain_cell(row["job"]),
                      best_run_dir=printable(Path(row["run_dir"]).resolve()), best_status=row["status"],
                      best_epoch=plain_cell(row["best_epoch"]))
        if "origin" in row:
            record["best_origin"] = printable(row["origin"])
        record.update(repeat_record(row["run_dir"]))
    record["runs"] = len(table)
    record["statuses"] = dict(Counter(printable(s) for s in table["status"]))
    return record


def write_best(record: dict[str, Any], table: pd.DataFrame, out: Path) -> dict[str, Any]:
    """Write `record` as out/best.json and return what best.json holds.

    An Optuna study's own best.json there (the same fields and the study's) is kept when it names
    the same best run and the table is that study's sweep alone; otherwise the collector's record
    replaces it, with the study's under "study", so best.json always names the table's first run.
    """
    from runner.results.pareto_report import same_best  # the same best run, or the same Pareto front

    path = out / BEST_FILE
    existing = read_json_object(path) if path.is_file() else None
    study = None
    if isinstance(existing, dict):
        study = existing if "study_name" in existing else existing.get("study")
    if isinstance(study, dict) and "study_name" in study:
        inside = all(resolved(d).is_relative_to(out.resolve()) for d in table["run_dir"])
        if inside and same_best(study, record):
            from runner.results.replicate_compare import FIELDS

            # with the collector's word on replicates (the study knows each trial's mean only)
            study = {**study, **{k: record[k] for k in FIELDS if "comparison" in record}}
            if study != existing:
                atomic_write_json(path, study)
            log.info("%s is the Optuna study's: kept", path)
            return study
        record = {**record, "study": study}
    atomic_write_json(path, record)
    return record


