"""best.json: a sweep's best run, its overrides, and the command that trains it again.

The same form for a grid (written by the collector) and an Optuna search (written by
runner/optuna_report.py, which adds the study's own fields): best_value, best_params,
best_job_num, best_run_dir, best_status, best_overrides, command, statuses.

The best run is the first in `ranked` order, which the printed table and report.html follow too:
completed runs by the objective, then other runs with a value (diverged, pruned, interrupted,
still running), launch order on a tie; a failed or refused run is never the best.

The command is the run's own command-line overrides, as the run recorded them in its
summary.json when it started training (runner/job_records.py's `launched_as`), not Hydra's
`.hydra/overrides.yaml`: a later job sent to the same folder (a changed grid re-run into the
sweep dir, a fixed hydra.sweep.subdir) rewrites that file, and is refused. A folder from before
such records uses `.hydra/overrides.yaml` only while Hydra's copy of the config there agrees with
the run's own config.yaml; otherwise best.json has no command and says why (command_note).
`hparams_search=...` / `experiment=...` stay in it, because such a file may set run keys as well
as the search; without `-m` the search settings are ignored and one run trains. `resume=` and
`rerun=` are left out: a resumed run equals an uninterrupted one (tested in tests/test_train.py),
so a run resumed from another's checkpoint repeats as that run's overrides with its own on top.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from common.io import atomic_write_json
from runner.collect_read import printable, read_json_object, read_yaml
from runner.job_records import NOT_TRAINED, ORDER

log = logging.getLogger("runner.collect")

# Overrides that say how a run was started, not what it trains.
NOT_REPEATED = ("resume", "rerun")
# Runs whose value may make them the best (every status but the untrained); completed ones come first.
MAY_BE_BEST = tuple(status for status in ORDER if status not in NOT_TRAINED)
RESUME_DEPTH = 8  # a chain of runs each resumed from the one before


def read_overrides(run_dir: str | Path) -> list[str]:
    """Hydra's `.hydra/overrides.yaml`: the overrides of the last job sent to the folder."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    ok, overrides = read_yaml(path)
    return [str(o) for o in overrides] if ok and isinstance(overrides, list) else []


def _key(override: str) -> str:
    return override.lstrip("+~").split("=")[0]


def recorded_overrides(run_dir: Path, depth: int = 0) -> tuple[list[str] | None, str | None]:
    """(the overrides that train the run again, a note) from what the run recorded; (None, why) when unknown."""
    summary = read_json_object(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    own = (summary or {}).get("overrides")
    if isinstance(own, list) and all(isinstance(o, str) for o in own):
        overrides = list(own)
    else:
        stale = _hydra_copy_differs(run_dir)
        if stale:
            return None, (f"{printable(run_dir)}/.hydra/overrides.yaml is a later job's (its config differs from the "
                          f"run's config.yaml at {stale}) and the run recorded no overrides of its own")
        overrides = read_overrides(run_dir)
    resumed = [o.split("=", 1)[1] for o in overrides if _key(o) == "resume" and "=" in o]
    kept = [o for o in overrides if _key(o) not in NOT_REPEATED]
    if not resumed or resumed[-1] in ("", "null", "None"):
        return kept, None
    origin = Path(resumed[-1]).parent
    base, _ = recorded_overrides(origin, depth + 1) if depth < RESUME_DEPTH and origin.is_dir() else (None, None)
    if base is None:
        return kept, (f"resumed from {printable(resumed[-1])}, whose run's overrides are unknown: "
                      "add the original run's overrides to the command")
    mine = {_key(o): o for o in kept}
    merged = [mine.pop(_key(o), o) for o in base]
    return merged + list(mine.values()), None


def _hydra_copy_differs(run_dir: Path) -> str | None:
    """The first key where `.hydra/config.yaml` (Hydra's, of the last job sent here) differs from
    the run's own config.yaml, ignoring keys that never change a result; None if they agree or either is missing."""
    from runner.collect_read import MAX_KEYS, flatten, hydra_config
    from runner.config_keys import result_neutral

    own_path, hydra_path = run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"
    if not own_path.is_file() or not hydra_path.is_file():
        return None
    ok, own = read_yaml(own_path)
    hydra = hydra_config(hydra_path)
    if not ok or not isinstance(own, dict) or not isinstance(hydra, dict):
        return None
    try:
        own_flat, hydra_flat = flatten(own, limit=MAX_KEYS), flatten(hydra, limit=MAX_KEYS)
    except (ValueError, RecursionError):
        return None
    for key in sorted(set(own_flat) | set(hydra_flat)):
        if result_neutral(key) or key == "dataset.num_classes":
            continue
        mine, theirs = own_flat.get(key), hydra_flat.get(key)
        if isinstance(theirs, str) and "${" in theirs:  # left unresolved: nothing to compare
            continue
        if mine != theirs:
            return key
    return None


def repeat_record(run_dir: str | Path) -> dict[str, Any]:
    """The run's overrides and the `python -m runner ...` command that repeats it."""
    overrides, note = recorded_overrides(Path(run_dir))
    command = None if overrides is None else " ".join(["python -m runner", *map(shlex.quote, overrides)])
    record: dict[str, Any] = {"best_overrides": overrides, "command": command}
    notes = [n for n in (note, _parallel_note(Path(run_dir))) if n]
    if notes:
        record["command_note"] = "; ".join(notes)
    return record


def _parallel_note(run_dir: Path) -> str | None:
    """A trial run beside others with compute.threads=auto used fewer threads than a lone run
    will, and a different thread count changes floating-point summation order."""
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    config = run_dir / "config.yaml"
    if not hydra_yaml.exists() or not config.exists():
        return None
    hydra, cfg = read_yaml(hydra_yaml)[1], read_yaml(config)[1]
    launcher = (hydra.get("hydra") if isinstance(hydra, dict) else None) or {}
    launcher = (launcher.get("launcher") if isinstance(launcher, dict) else None) or {}
    compute = (cfg.get("compute") if isinstance(cfg, dict) else None) or {}
    if not isinstance(launcher, dict) or not isinstance(compute, dict):
        return None
    n_jobs = launcher.get("n_jobs")
    threads = compute.get("threads")
    if "joblib" in str(launcher.get("_target_", "")) and n_jobs not in (None, 1) and str(threads) == "auto":
        return (f"ran as one of {n_jobs} parallel trials with compute.threads=auto (the cores shared among them); "
                "add compute.threads=<cores/n_jobs> to repeat its arithmetic exactly")
    return None


def objective_metric(table: pd.DataFrame) -> str:
    """The summary column the runs were judged by: best_<objective> when every run has the same
    `objective` (val_acc | val_robust_acc, what each returned to its sweeper), else best_val_acc."""
    from runner.collect_read import read_config
    from runner.objective import DEFAULT_OBJECTIVE, objective_of, summary_column

    objectives = {objective_of(read_config(Path(d))) for d in table["run_dir"]}
    metric = summary_column(objectives.pop() if len(objectives) == 1 else DEFAULT_OBJECTIVE)
    return metric if metric in table.columns else summary_column(DEFAULT_OBJECTIVE)


def ranked(table: pd.DataFrame, metric: str = "best_val_acc") -> pd.DataFrame:
    """The table best first: completed runs by `metric`, then other runs that may be the best, then
    the rest (failed, refused: by value, then without one); launch order on a tie. A table with a
    `front` column (several objectives, runner/pareto.py) is ranked by front first."""
    from runner.objective import column_direction
    from runner.pareto import front_rank_keys

    values = pd.to_numeric(table[metric], errors="coerce").astype(float).tolist()
    statuses = table["status"].tolist()
    fronts = front_rank_keys(table)
    sign = -1.0 if column_direction(metric) == "minimize" else 1.0  # params_m, wall_s: the lowest first

    def order(i: int) -> tuple:
        value = values[i]
        has = not math.isnan(value)
        tier = 0 if has and statuses[i] == "completed" else 1 if has and statuses[i] in MAY_BE_BEST else 2
        return (fronts[i], tier, not has, -sign * value if has else 0.0, i)

    return table.iloc[sorted(range(len(table)), key=order)]


def best_row(table: pd.DataFrame, metric: str = "best_val_acc") -> pd.Series | None:
    """The first run in `ranked` order, if it may be the best (none when every run failed or has no value)."""
    if table.empty:
        return None
    row = ranked(table, metric).iloc[0]
    value = pd.to_numeric(pd.Series([row[metric]]), errors="coerce")[0]
    return row if not pd.isna(value) and row["status"] in MAY_BE_BEST else None


def best_record(table: pd.DataFrame, key_columns: list[str], metric: str | None = None) -> dict[str, Any]:
    """best.json's content for a collected table (a grid, a search, or several merged)."""
    from runner.pareto import FRONT, front_record

    metric = metric or objective_metric(table)
    if FRONT in table.columns:  # several objectives: the Pareto front instead of one best run
        return {**front_record(table, key_columns), "runs": len(table),
                "statuses": dict(Counter(printable(s) for s in table["status"]))}
    row = best_row(table, metric)
    record: dict[str, Any] = {"metric": metric, "direction": "maximize", "best_value": None,
                              "best_params": None, "best_job_num": None, "best_run_dir": None, "best_status": None,
                              "best_epoch": None, "best_overrides": None, "command": None}
    if row is not None:
        params = {printable(k): _plain(row[k]) for k in key_columns}
        record.update(best_value=float(row[metric]), best_params=params, best_job_num=_plain(row["job"]),
                      best_run_dir=printable(Path(row["run_dir"]).resolve()), best_status=row["status"],
                      best_epoch=_plain(row["best_epoch"]))
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
    from runner.pareto import same_best  # the same best run, or the same Pareto front

    path = out / "best.json"
    existing = read_json_object(path) if path.is_file() else None
    study = None
    if isinstance(existing, dict):
        study = existing if "study_name" in existing else existing.get("study")
    if isinstance(study, dict) and "study_name" in study:
        inside = all(_resolved(d).is_relative_to(out.resolve()) for d in table["run_dir"])
        if inside and same_best(study, record):
            from runner.replicate_compare import FIELDS

            # with the collector's word on replicates (the study knows each trial's mean only)
            study = {**study, **{k: record[k] for k in FIELDS if "comparison" in record}}
            if study != existing:
                atomic_write_json(path, study)
            log.info("%s is the Optuna study's: kept", path)
            return study
        record = {**record, "study": study}
    atomic_write_json(path, record)
    return record


def _resolved(path: Any) -> Path:
    return Path(str(path)).resolve()


def same_folder(a: Any, b: Any) -> bool:
    """Whether two run-folder paths name the same folder (None only equals None)."""
    if a is None or b is None:
        return a is None and b is None
    return printable(_resolved(a)) == printable(_resolved(b))


def _plain(value: Any) -> Any:
    """A table cell as JSON: numpy scalars as Python numbers, missing as null."""
    if value is None or (not isinstance(value, (list, tuple, str)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value
