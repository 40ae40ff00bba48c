"""A run's objective: which of its numbers a sweeper is told, the one rule everywhere a value is read.

`objective=val_acc` (the default) or `objective=val_robust_acc` (with an adversary) names the
metric; a run's value is the best epoch's, `best_<objective>` in its summary.json. A list names
several objectives, `objective=[val_acc,params_m]`: the run's value is then a tuple, one number
per objective, for Optuna's multi-objective study (its Pareto front, runner/results/pareto.py). Each
objective has its summary.json key and its natural direction (METRICS): accuracies are
maximised, the model's size and the time a run took are minimised. A single objective is an
accuracy; size and time only make sense beside one.

A run that failed or was refused has no value (the sweeper records it as failed), nor does a run
missing any of its objectives' numbers; a diverged or pruned run keeps the best it reached. Used
by the single run (runner/__main__.py), a fused group (runner/fused/), a trial recovered from a
stopped worker (runner/search/trials.py) and the collector's tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from common.errors import ConfigError
from runner.record.run_folder import NO_VALUE, read_config

OBJECTIVES = ("val_acc", "val_robust_acc")  # what a single objective may be
DEFAULT_OBJECTIVE = "val_acc"
# Every objective a run may be judged by: (its summary.json key, its natural direction).
METRICS = {
    "val_acc": ("best_val_acc", "maximize"),              # the best epoch's validation accuracy (%)
    "val_robust_acc": ("best_val_robust_acc", "maximize"),  # under the adversary (needs one)
    "params_m": ("params_m", "minimize"),                 # the model's trainable parameters, in millions
    "wall_s": ("wall_s", "minimize"),                     # the run's wall time from start to end, seconds
    "train_s": ("train_s", "minimize"),                   # the time its training epochs took, seconds
}


def objectives_of(cfg: Any) -> tuple[str, ...]:
    """The objectives a run's config names (`objective`: one name or a list), or the default."""
    name = cfg.get("objective") if hasattr(cfg, "get") else None
    if _is_list(name):
        return tuple(str(n) for n in name) or (DEFAULT_OBJECTIVE,)
    return (str(name or DEFAULT_OBJECTIVE),)


def _is_list(value: Any) -> bool:
    """A list of objectives: as typed (ListConfig), read from YAML (list) or from a flattened config (tuple)."""
    from omegaconf import ListConfig

    return isinstance(value, (list, tuple, ListConfig))


def objective_of(cfg: Any) -> str:
    """The first objective a run's config names: the one a pruner and a single-objective table use."""
    return objectives_of(cfg)[0]


def summary_column(objective: str) -> str:
    """The summary.json key holding a run's value for `objective`."""
    return METRICS[objective][0] if objective in METRICS else f"best_{objective}"


def direction(objective: str) -> str:
    """`maximize` or `minimize`: which way `objective` gets better."""
    return METRICS[objective][1] if objective in METRICS else "maximize"


def column_direction(column: str) -> str:
    """The direction of a summary column (best_val_acc: maximize, params_m: minimize)."""
    return next((d for c, d in METRICS.values() if c == column), "maximize")


def objective_value(objective: str | Sequence[str], summary: dict[str, Any]) -> float | tuple[float, ...] | None:
    """The run's value: for one objective a finite number, for several a tuple of them; None when
    the run failed, was refused, or lacks any of the numbers."""
    if isinstance(objective, str) or len(objective) == 1:
        return _one_value(objective if isinstance(objective, str) else objective[0], summary)
    values = tuple(_one_value(name, summary) for name in objective)
    return None if any(v is None for v in values) else values


def _one_value(objective: str, summary: dict[str, Any]) -> float | None:
    if summary.get("status") in NO_VALUE:
        return None
    try:
        value = float(summary.get(summary_column(objective)))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def as_values(value: Any) -> list[float] | None:
    """A run's value (a number, or a tuple for several objectives) as Optuna's list of values;
    None when it is missing or any number in it is not finite."""
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    return values if values and all(math.isfinite(v) for v in values) else None


def recorded_objectives(run_dir: str | Path) -> tuple[str, ...]:
    """The objectives a run folder's own config.yaml names (the default where it has none)."""
    try:
        return objectives_of(read_config(Path(run_dir)) or {})
    except ValueError:
        return (DEFAULT_OBJECTIVE,)


def recorded_objective(run_dir: str | Path) -> str:
    """The first objective a run folder's own config.yaml names (the default where it has none)."""
    return recorded_objectives(run_dir)[0]


def check_objective(value: Any, has_adversary: bool) -> None:
    """ConfigError, in one line naming the fix, for an `objective` that can't be measured."""
    several = _is_list(value)
    names = [str(n) for n in value] if several else [str(value if value is not None else DEFAULT_OBJECTIVE)]
    shown = f"[{','.join(names)}]" if several else names[0]
    known = ", ".join(METRICS)
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"objective={shown} is invalid: {name} is no objective; use objective=val_acc or "
                              f"val_robust_acc, or a list of several of {known}, e.g. objective=[val_acc,params_m]")
    if len(names) == 1 and names[0] not in OBJECTIVES:
        raise ConfigError(f"objective={shown} is invalid: a single objective is an accuracy (val_acc or "
                          f"val_robust_acc); {names[0]} goes beside one, e.g. objective=[val_acc,{names[0]}]")
    if len(set(names)) < len(names):
        raise ConfigError(f"objective={shown} names an objective twice: list each once")
    if not names:
        raise ConfigError("objective=[] is invalid: name one objective or more, e.g. objective=val_acc")
    if "val_robust_acc" in names and not has_adversary:
        what = "it is" if not several else "val_robust_acc is"
        raise ConfigError(f"objective={shown} is invalid: {what} measured only with an adversary: "
                          "add adversary=pgd or fgsm")
