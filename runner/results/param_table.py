"""Which settings matter: each swept key's importance and its correlation with the objective.

Written by the collector as param_importance.csv and a section of report.html, for a grid and a
search alike, over the table's finished rows (completed, with a value; a config's mean where it
has replicates, runner/results/replicate_stats.py). One row per numeric key, one per value of a named key:
  key, value (a named key's value; empty for a number), kind (number | category),
  importance, correlation, configs (how many finished rows the figures come from).

importance  Optuna's fANOVA (`FanovaImportanceEvaluator(seed=0)`, the evaluator of the Optuna
            report's importance plot, which fits the study's own search space: a key declared
            a choice there, batch_size=choice(8,16,...), is a number here) fitted on an
            in-memory study of the finished rows: each key's share of the objective's variance
            (a named key's share is the key's, repeated on each of its values). fANOVA rather
            than PED-ANOVA: PED-ANOVA compares the top 10% of trials with the rest, and a grid
            of a dozen configs has one such trial at most; fANOVA uses every row. Distributions
            come from the values: whole numbers an int, other numbers a float (log where they span
            a decade, as the by-parameter plot's axis), anything else or a key unset in some rows a
            category. Empty when the objective is the same in every row (nothing to explain).
correlation Pearson's r between the key and the objective (pandas' `Series.corr`); a category
            one-hot: its own row, 1 where the key has that value. Empty where either is constant.

Skipped, in one info line and no table, with fewer than 3 finished configs or no swept key that
differs among them.
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from common.io import atomic_write_text
from runner.record.run_folder import Status
from runner.results.read import PARAM_TABLE_FILE, printable

log = logging.getLogger("runner.collect")

FILE = PARAM_TABLE_FILE
MIN_CONFIGS = 3
UNSET = "(unset)"
COLUMNS = ["key", "value", "kind", "importance", "correlation", "configs"]


def _label(value: Any) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA
    return UNSET if missing else printable(value)


def swept_param(values: pd.Series) -> tuple[pd.Series, Any] | None:
    """(the values as the study takes them, their Optuna distribution); None for a key that does not vary."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from runner.results.plots import is_numeric, uses_log_axis

    complete = all(_label(v) != UNSET for v in values)
    if complete and is_numeric(values):
        numbers = values.astype(float)
        low, high = numbers.min(), numbers.max()
        if low == high:
            return None
        if all(isinstance(v, (int, np.integer)) for v in values):
            return values.astype(int), IntDistribution(int(low), int(high), log=uses_log_axis(numbers))
        return numbers, FloatDistribution(float(low), float(high), log=uses_log_axis(numbers))
    labels = values.map(_label)
    choices = tuple(dict.fromkeys(labels))
    return (labels, CategoricalDistribution(choices)) if len(choices) > 1 else None


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No "new study created" line and no experimental-feature warnings for a study that is never stored."""
    optuna_log = logging.getLogger("optuna")
    level = optuna_log.level
    optuna_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna_log.setLevel(level)


def importances(params: dict[str, tuple[pd.Series, Any]], objective: pd.Series) -> dict[str, float]:
    """fANOVA's importance per key over the rows; {} when the objective does not vary."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    if objective.nunique() < 2:
        return {}
    with _quiet_optuna():
        study = optuna.create_study(direction="maximize")
        study.add_trials([optuna.trial.create_trial(
            params={key: values.iloc[i].item() if hasattr(values.iloc[i], "item") else values.iloc[i]
                    for key, (values, _) in params.items()},
            distributions={key: dist for key, (_, dist) in params.items()},
            value=float(objective.iloc[i])) for i in range(len(objective))])
        found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    return {key: float(value) for key, value in found.items()}


def param_table(table: pd.DataFrame, keys: list[str], metric: str) -> tuple[pd.DataFrame | None, str | None]:
    """(the table, None), or (None, why there is none)."""
    value = pd.to_numeric(table[metric], errors="coerce").astype(float)
    finished = table[(table["status"] == Status.COMPLETED) & value.notna()]
    if len(finished) < MIN_CONFIGS:
        return None, (f"no parameter table: {len(finished)} finished config{'s' * (len(finished) != 1)}, "
                      f"it needs {MIN_CONFIGS}")
    objective = value[finished.index]
    params = {key: found for key in keys if (found := swept_param(finished[key])) is not None}
    if not params:
        return None, "no parameter table: no swept key differs among the finished configs"
    try:
        importance = importances(params, objective)
    except Exception as e:  # values no model takes (someone else's folders): the correlations stand without it
        log.warning("parameter importance not computed (%s: %s)", type(e).__name__,
                    (printable(e).splitlines() or [""])[0])
        importance = {}
    rows = []
    for key, (values, dist) in params.items():
        common = {"key": printable(key), "importance": importance.get(key, math.nan), "configs": len(finished)}
        if hasattr(dist, "choices"):
            rows += [{**common, "value": choice, "kind": "category",
                      "correlation": (values == choice).astype(float).corr(objective)} for choice in dist.choices]
        else:
            rows.append({**common, "value": None, "kind": "number",
                         "correlation": values.astype(float).corr(objective)})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame = frame.sort_values("importance", ascending=False, kind="stable", na_position="last")
    return frame.reset_index(drop=True), None


def write_param_table(frame: pd.DataFrame | None, out: Path) -> None:
    """out/param_importance.csv, or none: an earlier collect's would outlive the runs it came from."""
    if frame is None:
        (out / FILE).unlink(missing_ok=True)
    else:
        atomic_write_text(out / FILE, frame.to_csv(index=False))


def html_section(frame: pd.DataFrame | None, note: str | None) -> str:
    """report.html's "Which settings matter" section."""
    head = "<h2>Which settings matter</h2>"
    if frame is None:
        return f"{head}\n<p>{html.escape(printable(note))}.</p>"

    def number(value: Any, signed: bool = False) -> str:
        return "" if pd.isna(value) else f"{value:+.2f}" if signed else f"{value:.2f}"

    rows = "".join(
        f"<tr><td>{html.escape(printable(r.key))}</td>"
        f"<td>{'' if r.value is None else html.escape(printable(r.value))}</td>"
        f'<td class="num">{number(r.importance)}</td><td class="num">{number(r.correlation, True)}</td></tr>\n'
        for r in frame.itertuples())
    return (f"{head}\n<p>Over {int(frame['configs'].iloc[0])} finished configs: importance is Optuna's fANOVA "
            "(each key's share of the objective's variance), correlation Pearson's r with the objective "
            f"(a named value: 1 where the key has it). Also in {FILE}.</p>\n"
            "<table>\n<thead><tr><th>key</th><th>value</th><th>importance</th><th>correlation</th></tr></thead>\n"
            f"<tbody>\n{rows}</tbody></table>")
