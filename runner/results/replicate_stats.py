"""Runs of one config that differ only in their seed, as one row: mean, std, n and each value.

The collector (runner/collect.py) lists every run folder; this groups them. Two rows are one
config when their configs are equal once `seed`, `replicates` and the keys that never change a
result (speed and display keys, runner/config/keys.py) are left out, and their
seeds differ: a run repeated with a seed its group already holds is the same run again, not a
new replicate, and starts a row of its own. A run whose config cannot be read is never grouped.

A replicate job (`replicates=N`) is one row: its folder holds `replicate_0/`, `replicate_1/`, ...
each a complete run folder, and the row's numbers are computed from those folders (the job's
own summary.json says the same; a disagreement gets a warning naming the file).

A row's value for the objective is the mean over its counted runs: completed with a value. A run
that diverged, failed or was refused is not counted but counted separately (`n_failed`); one
still running, interrupted or pruned is neither, and the row's status says so (the mean so far).
With no counted run, the value is the mean of the values the others reached, as for one run.
Where every row is one run and none is a replicate job the table is left exactly as it was.

Added columns: `<metric>_std` (sample std, ddof=1; empty below 2 counted runs), `n`, `n_failed`,
`values` and `seeds` (the counted runs', in the same order) and `replicate_dirs` (every run
folder the row stands for). `job` and `run_dir` are the first run's (a job's own folder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runner.record.run_folder import COUNTED_IN_ROW, FAILURES, NO_VALUE, REPLICATE_FOLDER, SUMMARY_FILE, Status
from runner.results.read import read_choices, read_config, read_outcome, warn

STAT_COLUMNS = ("n", "n_failed", "values", "seeds", "replicate_dirs")
NOT_GROUPED = ("seed", "replicates")  # what replicates of one config differ in
REPLICATE_PREFIX = REPLICATE_FOLDER.format("")
TOLERANCE = 1e-6  # the job summary's mean may be rounded when written
AVERAGED = ("train_s", "val_s", "wall_s", "params_m")  # with every best_* but the objective's, over a group's runs


def std_column(metric: str) -> str:
    return f"{metric}_std"


@dataclass
class Member:
    """One run behind a row: its value for the objective, status, seed and folder."""
    value: float | None
    status: str
    seed: Any
    folder: Path


def replicate_folders(job_dir: Path) -> list[Path]:
    """A replicate job's replicate_0, replicate_1, ... in order; none for a plain run."""
    try:
        found = [p for p in job_dir.iterdir() if p.is_dir() and p.name.startswith(REPLICATE_PREFIX)
                 and p.name[len(REPLICATE_PREFIX):].isascii() and p.name[len(REPLICATE_PREFIX):].isdigit()]
    except OSError:
        return []
    return sorted(found, key=lambda p: int(p.name[len(REPLICATE_PREFIX):]))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def members_of(run_dir: Path, row: pd.Series, metric: str, config: dict[str, Any]) -> list[Member]:
    """The runs a table row stands for: a replicate job's replicates, else the run (its `config`) itself."""
    folders = replicate_folders(run_dir)
    if not folders:
        value = None if row["status"] in NO_VALUE else _number(row.get(metric))
        return [Member(value, str(row["status"]), config.get("seed"), run_dir)]
    members = []
    for folder in folders:
        outcome = read_outcome(folder)
        status = str(outcome.get("status"))
        value = None if status in NO_VALUE else _number(outcome.get(metric))
        members.append(Member(value, status, read_config(folder).get("seed"), folder))
    _check_job_summary(run_dir, row, metric, members)
    return members


def _check_job_summary(run_dir: Path, row: pd.Series, metric: str, members: list[Member]) -> None:
    """Warn where a finished job's own mean or n is not what its replicate folders hold."""
    if row["status"] not in COUNTED_IN_ROW:
        return
    counted = [m.value for m in members if m.status in COUNTED_IN_ROW and m.value is not None]
    said = _number(row.get(metric))
    if counted and said is not None and abs(said - float(np.mean(counted))) > TOLERANCE:
        warn(run_dir / SUMMARY_FILE, f"{metric} is {said:g}, but its replicate folders' mean over "
             f"{len(counted)} completed runs is {np.mean(counted):g}; the folders' is used")


def config_key(run_dir: Path, config: dict[str, Any]) -> str | None:
    """What a run trains (its flattened `config` and choices) without its seed: equal for runs that
    differ only in seed; None if unknown."""
    from runner.config.keys import result_neutral

    if not config:
        return None
    kept = {k: repr(v) for k, v in config.items() if k not in NOT_GROUPED and not result_neutral(k)}
    kept.update({f"choice {k}": repr(v) for k, v in read_choices(run_dir).items() if not result_neutral(k)})
    return repr(sorted(kept.items()))


def _groups(keys: list[str | None], members: list[list[Member]]) -> list[list[int]]:
    """Row positions per config, in launch order; a seed a group already holds starts a new group."""
    groups: list[list[int]] = []
    seeds: list[set[str]] = []
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        mine = {repr(m.seed) for m in members[i]}
        target = next((g for g in by_key.get(key, []) if not seeds[g] & mine), None) if key is not None else None
        if target is None:
            target = len(groups)
            groups.append([])
            seeds.append(set())
            if key is not None:
                by_key.setdefault(key, []).append(target)
        groups[target].append(i)
        seeds[target] |= mine
    return groups


def group_status(members: list[Member]) -> str:
    """`completed` when the mean is final; else what keeps it from being so (runner/sweep/job_records.py's order)."""
    from runner.sweep.job_records import ORDER

    def rank(status: str) -> int:
        return ORDER.index(status) if status in ORDER else len(ORDER)

    counted = [m for m in members if m.status in COUNTED_IN_ROW and m.value is not None]
    if counted:
        unfinished = [m.status for m in members if m.status not in COUNTED_IN_ROW and m.status not in FAILURES]
        return min(unfinished, key=rank) if unfinished else Status.COMPLETED
    return min((m.status for m in members), key=rank)


def summarise(members: list[Member]) -> dict[str, Any]:
    """mean, std, n, n_failed, values and seeds of one row's runs."""
    from runner.results.ranking import MAY_BE_BEST

    counted = [m for m in members if m.status in COUNTED_IN_ROW and m.value is not None]
    values = [m.value for m in counted]
    if not values:  # nothing completed: the values the others reached, as one such run shows its own
        values_shown = [m.value for m in members if m.value is not None and m.status in MAY_BE_BEST]
        mean = float(np.mean(values_shown)) if values_shown else math.nan
    else:
        mean = float(np.mean(values))
    return {"mean": mean, "std": float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan,
            "n": len(values), "n_failed": sum(m.status in FAILURES for m in members),
            "values": values, "seeds": [m.seed for m in counted], "status": group_status(members)}


def grouped(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The collected table with the runs of each config as one row (this module's docstring)."""
    if table.empty:
        return table
    run_dirs = [Path(d) for d in table["run_dir"]]
    configs = [read_config(d) for d in run_dirs]
    members = [members_of(d, row, metric, c) for d, (_, row), c in zip(run_dirs, table.iterrows(), configs)]
    groups = _groups([config_key(d, c) for d, c in zip(run_dirs, configs)], members)
    if len(groups) == len(table) and all(len(m) == 1 and m[0].folder == Path(d)
                                         for m, d in zip(members, table["run_dir"])):
        return table  # plain runs, one per config: the table as it was
    rows = [_group_row(table, group, [m for i in group for m in members[i]], metric) for group in groups]
    # The seed is the row's `seeds` now; the statistics follow the objective's column.
    ordered = [c for c in table.columns if c not in NOT_GROUPED]
    at = ordered.index(metric) + 1
    ordered = [*ordered[:at], std_column(metric), *STAT_COLUMNS[:-1], *ordered[at:], "replicate_dirs"]
    out = pd.DataFrame(rows, columns=ordered)
    return out.astype({c: "Int64" for c in ("best_epoch", "epochs_done", "n", "n_failed") if c in out.columns})


def _group_row(table: pd.DataFrame, group: list[int], members: list[Member], metric: str) -> dict[str, Any]:
    rows = table.iloc[group]
    out = rows.iloc[0].to_dict()
    stats = summarise(members)
    if len(group) > 1:  # several runs: the counted ones' other numbers averaged; no one best epoch stands for all
        done = rows["status"].isin(COUNTED_IN_ROW)
        basis = rows[done] if done.any() else rows
        for column in table.columns:
            if column != metric and (column.startswith("best_") or column in AVERAGED):
                numbers = pd.to_numeric(basis[column], errors="coerce").astype(float).dropna()
                out[column] = float(numbers.mean()) if len(numbers) else math.nan
        out["best_epoch"] = None
        out["epochs_done"] = pd.to_numeric(rows["epochs_done"], errors="coerce").max()
        errors = rows["error"].dropna()
        out["error"] = errors.iloc[0] if len(errors) else None
    out.update({metric: stats["mean"], std_column(metric): stats["std"], "status": stats["status"],
                **{k: stats[k] for k in ("n", "n_failed", "values", "seeds")},
                "replicate_dirs": [str(m.folder) for m in members]})
    return out


def curve_of(row: pd.Series) -> pd.DataFrame | None:
    """A row's val_acc per epoch: its run's metrics.csv, or for several runs the mean over the
    counted ones with `val_acc_std` (ddof=1) for a band; None when there is nothing to draw."""
    from runner.results.read import read_metrics

    folders = [Path(d) for d in row["replicate_dirs"]] if isinstance(row.get("replicate_dirs"), list) else []
    if len(folders) <= 1:
        return read_metrics(Path(row["run_dir"]))
    counted = [f for f in folders if read_outcome(f).get("status") in COUNTED_IN_ROW] or folders
    frames = [f for f in (read_metrics(folder) for folder in counted) if f is not None and len(f)]
    if not frames:
        return read_metrics(Path(row["run_dir"]))
    stacked = pd.concat([f[["epoch", "val_acc"]] for f in frames])
    by_epoch = stacked.groupby("epoch")["val_acc"]
    return pd.DataFrame({"epoch": by_epoch.mean().index, "val_acc": by_epoch.mean().values,
                         "val_acc_std": by_epoch.std(ddof=1).values})


def as_json_cells(shown: pd.DataFrame) -> pd.DataFrame:
    """results.csv's list cells (values, seeds, replicate_dirs) as JSON, which any reader parses."""
    import json

    from runner.results.read import printable

    out = shown.copy()
    for column in ("values", "seeds", "replicate_dirs"):
        if column in out.columns:
            out[column] = out[column].map(lambda cell: json.dumps([v if isinstance(v, (int, float)) or v is None
                                                                   else printable(v) for v in cell]))
    return out
