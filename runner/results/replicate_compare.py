"""Which configs best.json cannot tell apart from the best one, where configs have replicates.

The best config is the one with the highest mean (runner/results/best_run.py's order over the grouped
table, runner/results/replicate_stats.py). Every other config with at least one counted run is compared
with it by Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`, two-sided) on the two
configs' replicate values, at 5%: p < 0.05 puts it under `worse`, else `not_distinguishable`
(identical values on both sides give no p: not distinguishable). With fewer than 2 counted runs
on either side there is no verdict: `not_enough_replicates`. A config with no counted run (every
replicate diverged or failed) is not compared. Nothing is added for a table of plain runs.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pandas as pd

from runner.results.read import printable
from runner.results.replicate_stats import std_column

ALPHA = 0.05
TEST = "Welch's t-test (scipy.stats.ttest_ind, equal_var=False), two-sided, at 5%, on each config's replicate values"
VERDICTS = ("not_distinguishable", "worse", "not_enough_replicates")
FIELDS = ("best_std", "best_n", "best_n_failed", "best_values", "best_seeds", "best_run_dirs", "comparison", *VERDICTS,
          "configs", "runs")


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Welch's two-sided p-value; None below 2 values on either side or for identical values."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical values: scipy warns and gives nan
        p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def verdict(best: list[float], other: list[float]) -> tuple[str, float | None]:
    if len(best) < 2 or len(other) < 2:
        return "not_enough_replicates", None
    p = welch_p(best, other)
    return ("worse" if p is not None and p < ALPHA else "not_distinguishable"), p


def comparison_record(table: pd.DataFrame, key_columns: list[str], metric: str) -> dict[str, Any]:
    """best.json's fields on uncertainty: the best config's std, n and values, and every other
    config compared with it; {} for a table of plain runs (no `<metric>_std` column)."""
    from runner.results.ranking import best_row, plain_cell

    if std_column(metric) not in table.columns:
        return {}
    best = best_row(table, metric)
    if best is None:
        return {}
    record: dict[str, Any] = {
        "best_std": plain_cell(best[std_column(metric)]), "best_n": plain_cell(best["n"]),
        "best_n_failed": plain_cell(best["n_failed"]), "best_values": list(best["values"]),
        "best_seeds": [plain_cell(s) for s in best["seeds"]], "best_run_dirs": list(best["replicate_dirs"]),
        "comparison": TEST, **{name: [] for name in VERDICTS},
        "configs": len(table), "runs": sum(map(len, table["replicate_dirs"]))}  # best.json's `statuses`: the configs
    for index, row in table.iterrows():
        if index == best.name or not row["n"] or pd.isna(row["n"]):
            continue
        name, p = verdict(list(best["values"]), list(row["values"]))
        record[name].append({"job": plain_cell(row["job"]), "params": {printable(k): plain_cell(row[k]) for k in key_columns},
                             "mean": plain_cell(row[metric]), "std": plain_cell(row[std_column(metric)]),
                             "n": plain_cell(row["n"]), "p_value": p, "run_dir": printable(row["run_dir"])})
    return record
