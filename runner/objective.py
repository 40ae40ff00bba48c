"""A run's objective: which of its numbers a sweeper is told, the one rule everywhere a value is read.

`objective=val_acc` (the default) or `objective=val_robust_acc` (with an adversary) names the
metric; a run's value is the best epoch's, `best_<objective>` in its summary.json. A run that failed
or was refused has no value (the sweeper records it as failed); a diverged or pruned run keeps the
best it reached. Used by the single run (runner/__main__.py), a fused group (runner/fused/), a trial
recovered from a stopped worker (runner/optuna_trials.py) and the collector's tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

OBJECTIVES = ("val_acc", "val_robust_acc")
DEFAULT_OBJECTIVE = "val_acc"
NO_VALUE_STATUSES = ("failed", "refused")


def objective_of(cfg: Any) -> str:
    """The objective a run's config names (`objective`), or the default."""
    name = cfg.get("objective") if hasattr(cfg, "get") else None
    return str(name or DEFAULT_OBJECTIVE)


def summary_column(objective: str) -> str:
    """The summary.json key holding a run's value for `objective`."""
    return f"best_{objective}"


def objective_value(objective: str, summary: dict[str, Any]) -> float | None:
    """The run's value for `objective`: a finite number, or None (failed, refused, or nothing measured)."""
    if summary.get("status") in NO_VALUE_STATUSES:
        return None
    try:
        value = float(summary.get(summary_column(objective)))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def recorded_objective(run_dir: str | Path) -> str:
    """The objective a run folder's own config.yaml names (the default where it has none)."""
    import yaml

    try:
        return objective_of(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {})
    except (OSError, ValueError, yaml.YAMLError):
        return DEFAULT_OBJECTIVE
