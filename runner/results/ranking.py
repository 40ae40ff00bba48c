"""The order of a collected table, best first, and the run it names the best.

The best run is the first in `ranked` order, which the printed table, best.json and report.html
follow: completed runs by the objective, then other runs with a value (diverged, pruned,
interrupted, still running), launch order on a tie; a failed or refused run is never the best.
With several objectives (a `front` column, runner/results/pareto.py) runs are ranked by front first.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from runner.record.run_folder import NO_VALUE, Status
from runner.results.read import printable
from runner.sweep.job_records import ORDER

# Runs whose value may make them the best (every status but the untrained); completed ones come first.
MAY_BE_BEST = tuple(status for status in ORDER if status not in NO_VALUE)



def objective_metric(table: pd.DataFrame) -> str:
    """The summary column the runs were judged by: best_<objective> when every run has the same
    `objective` (val_acc | val_robust_acc, what each returned to its sweeper), else best_val_acc."""
    from runner.results.read import read_config
    from runner.config.objective import DEFAULT_OBJECTIVE, objective_of, summary_column

    objectives = {objective_of(read_config(Path(d))) for d in table["run_dir"]}
    metric = summary_column(objectives.pop() if len(objectives) == 1 else DEFAULT_OBJECTIVE)
    return metric if metric in table.columns else summary_column(DEFAULT_OBJECTIVE)



def ranked(table: pd.DataFrame, metric: str = "best_val_acc") -> pd.DataFrame:
    """The table best first: completed runs by `metric`, then other runs that may be the best, then
    the rest (failed, refused: by value, then without one); launch order on a tie. A table with a
    `front` column (several objectives, runner/results/pareto.py) is ranked by front first."""
    from runner.config.objective import column_direction
    from runner.results.pareto import front_rank_keys

    values = pd.to_numeric(table[metric], errors="coerce").astype(float).tolist()
    statuses = table["status"].tolist()
    fronts = front_rank_keys(table)
    sign = -1.0 if column_direction(metric) == "minimize" else 1.0  # params_m, wall_s: the lowest first

    def order(i: int) -> tuple:
        value = values[i]
        has = not math.isnan(value)
        tier = 0 if has and statuses[i] == Status.COMPLETED else 1 if has and statuses[i] in MAY_BE_BEST else 2
        return (fronts[i], tier, not has, -sign * value if has else 0.0, i)

    return table.iloc[sorted(range(len(table)), key=order)]



def best_row(table: pd.DataFrame, metric: str = "best_val_acc") -> pd.Series | None:
    """The first run in `ranked` order, if it may be the best (none when every run failed or has no value)."""
    if table.empty:
        return None
    row = ranked(table, metric).iloc[0]
    value = pd.to_numeric(pd.Series([row[metric]]), errors="coerce")[0]
    return row if not pd.isna(value) and row["status"] in MAY_BE_BEST else None



def resolved(path: Any) -> Path:
    return Path(str(path)).resolve()



def same_folder(a: Any, b: Any) -> bool:
    """Whether two run-folder paths name the same folder (None only equals None)."""
    if a is None or b is None:
        return a is None and b is None
    return printable(resolved(a)) == printable(resolved(b))



def plain_cell(value: Any) -> Any:
    """A table cell as JSON: numpy scalars as Python numbers, missing as null."""
    if value is None or (not isinstance(value, (list, tuple, str)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value

