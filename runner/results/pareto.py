"""Several objectives: a sweep's Pareto front, for a grid's tables and an Optuna study alike.

With `objective=[val_acc,params_m]` no single run is "the best": a run is on the Pareto front
when no other run is at least as good in every objective and better in one. Non-dominated
sorting peels the runs into fronts: front 0 is the Pareto front, front 1 what is left once it is
removed, and so on. The collector's tables (runner/collect.py) get a `front` column and are
ranked by it (each front by the first objective); best.json holds the front instead of one best
run (each member with its values, overrides and the command that repeats it), and report.html
shows it (runner/results/pareto_report.py). An Optuna study's best.json lists the study's own
`best_trials` in the same form (runner/optuna_report.py).

The runs on a front are those that returned values to their sweeper: completed or diverged
(a diverged run keeps the best it reached), with every objective's number; others have no front.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from common.errors import ConfigError
from runner.config.objective import check_objective, direction, objectives_of, summary_column
from runner.record.run_folder import FINISHED
from runner.results.read import read_config

FRONT = "front"
# Optuna samplers that refuse a study of several objectives (Optuna raises at the first ask).
SINGLE_OBJECTIVE_SAMPLERS = ("CmaEsSampler",)


# ---------------------------------------------------------------------- non-dominated sorting
def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when `a` is at least as good as `b` in every objective and better in one."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    better = [s * x > s * y for s, x, y in zip(signs, a, b)]
    worse = [s * x < s * y for s, x, y in zip(signs, a, b)]
    return any(better) and not any(worse)


def front_ranks(points: Sequence[Sequence[float] | None], directions: Sequence[str]) -> list[int | None]:
    """Each point's front (0: no other point dominates it), None for a point without values.

    Peels off one front at a time: quadratic per front, plenty for a sweep's hundreds of runs.
    """
    ranks: list[int | None] = [None] * len(points)
    left = [i for i, p in enumerate(points) if p is not None]
    rank = 0
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i], directions) for j in left if j != i)]
        for i in front:
            ranks[i] = rank
        left = [i for i in left if ranks[i] is None]
        rank += 1
    return ranks


# ---------------------------------------------------------------------- the collector's table
def table_objectives(table: pd.DataFrame) -> tuple[str, ...]:
    """The objectives the table's runs were judged by, when they share several; () otherwise."""
    if table.attrs.get("objectives"):  # found by with_front: each run's config is read once
        return tuple(table.attrs["objectives"])
    named = {objectives_of(config) for config in (read_config(Path(d)) for d in table["run_dir"]) if config}
    objectives = named.pop() if len(named) == 1 else ()
    if len(objectives) < 2 or any(summary_column(o) not in table.columns for o in objectives):
        return ()
    return objectives


def with_front(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a `front` column (before the outcome columns) when its runs share several
    objectives; as it is otherwise. Rows stay in launch order (`ranked` sorts by front)."""
    objectives = table_objectives(table)
    if not objectives:
        return table
    table = table.copy()
    table.attrs["objectives"] = list(objectives)
    table.insert(table.columns.get_loc("best_val_acc"), FRONT,
                 pd.array(front_ranks(_points(table, objectives), [direction(o) for o in objectives]), dtype="Int64"))
    return table


def _points(table: pd.DataFrame, objectives: Sequence[str]) -> list[tuple[float, ...] | None]:
    """Each run's values, or None for a run that returned none (not finished, a number missing)."""
    columns = [pd.to_numeric(table[summary_column(o)], errors="coerce").astype(float).tolist() for o in objectives]
    statuses = table["status"].tolist()
    points: list[tuple[float, ...] | None] = []
    for i, status in enumerate(statuses):
        values = tuple(column[i] for column in columns)
        points.append(values if status in FINISHED and all(math.isfinite(v) for v in values) else None)
    return points


def front_rank_keys(table: pd.DataFrame) -> list[float]:
    """Sort keys for runner/results/best_run.py's `ranked`: each run's front, inf where it has none (or no front column)."""
    if FRONT not in table.columns:
        return [math.inf] * len(table)
    return [math.inf if pd.isna(f) else float(f) for f in table[FRONT]]


def objective_fields(objectives: Sequence[str]) -> dict[str, Any]:
    """best.json's description of the objectives: their names, summary columns and directions."""
    return {"metric": summary_column(objectives[0]), "objectives": list(objectives),
            "metrics": [summary_column(o) for o in objectives], "directions": [direction(o) for o in objectives]}


def study_objectives(study: Any) -> list[str]:
    """The objectives' names the sweeper stored in the study (Optuna's metric names), else objective_<i>."""
    names = study.metric_names
    return list(names) if names else [f"objective_{i}" for i in range(len(study.directions))]


def front_run_dirs(best: dict[str, Any] | None) -> list[str]:
    """The run folders best.json names: its best run, or every run on its front."""
    if not best:
        return []
    if "pareto_front" in best:
        return [m["run_dir"] for m in best["pareto_front"] if isinstance(m, dict) and m.get("run_dir")]
    return [best["best_run_dir"]] if best.get("best_run_dir") else []


# ---------------------------------------------------------------------- checks before a sweep starts
def check_sweep_objectives(cfg: Any) -> None:
    """ConfigError, one line, for a sweep whose objectives and Optuna settings don't fit together:
    as many directions as objectives, each its objective's own way; no pruner and no single-objective
    sampler with several objectives. A single objective is checked only as it always was."""
    value = cfg.get("objective")
    check_objective(value, has_adversary=True)  # the adversary may be swept: each job checks its own
    sweeper = cfg.hydra.sweeper
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return
    objectives = objectives_of(cfg)
    directions = [str(getattr(d, "name", d)) for d in _as_list(sweeper.get("direction"))]
    shown = f"[{','.join(directions)}]" if len(directions) != 1 else directions[0]
    wanted = [direction(o) for o in objectives]
    if len(objectives) == 1:
        if len(directions) != 1:
            raise ConfigError(f"hydra.sweeper.direction={shown} gives {len(directions)} directions for one objective "
                              f"({objectives[0]}): use hydra.sweeper.direction={wanted[0]}, or name as many "
                              f"objectives, e.g. objective=[val_acc,params_m]")
        return
    fix = f"use hydra.sweeper.direction=[{','.join(wanted)}]"
    if len(directions) != len(objectives):
        raise ConfigError(f"hydra.sweeper.direction={shown} gives {len(directions)} direction(s) for "
                          f"{len(objectives)} objectives ({','.join(objectives)}): {fix}")
    for name, given, natural in zip(objectives, directions, wanted):
        if given != natural:
            raise ConfigError(f"hydra.sweeper.direction={shown} would {given} {name}, which is better "
                              f"{'higher' if natural == 'maximize' else 'lower'}: {fix}")
    from runner.search.pruning import wants_pruning

    if wants_pruning(sweeper.get("pruner")):
        raise ConfigError(f"hydra.sweeper.pruner ({str(sweeper.pruner._target_).split('.')[-1]}) cannot prune a "
                          "search of several objectives (Optuna's pruners judge one value): drop "
                          "hydra/sweeper/pruner, or use one objective")
    sampler = str((sweeper.get("sampler") or {}).get("_target_", "")).split(".")[-1]
    if sampler in SINGLE_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"hydra/sweeper/sampler ({sampler}) takes one objective: use tpe (the default), "
                          "nsgaii, random or qmc for several")


def _as_list(value: Any) -> list[Any]:
    from omegaconf import ListConfig

    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [] if value is None else [value]
