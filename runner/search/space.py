"""Which trials of a study count, which parameter sets ran, and the points of a discrete search space.

Plain functions over a study's trials, shared by the sweeper's loop (runner/search/sweeper.py).
A trial is left out of the count and of the parameter sets that ran when it was re-queued
(`retried`: its worker was killed), skipped as a repeat (`duplicate_of`), or asked after the
study was full (`surplus`: several workers asked at once).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

# Enumerate a fully discrete search space up to this many points to find unseen ones.
MAX_ENUMERATED_SPACE = 100_000
SKIPPED = ("retried", "duplicate_of", "surplus")


def _skipped(t: Any) -> bool:
    return any(k in t.user_attrs for k in SKIPPED)  # each is only ever set to mark a skipped trial


def _counts(t: Any) -> bool:
    """A trial that ran to an end and counts towards n_trials (see the sweeper's module docstring)."""
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and not _skipped(t))


def _tally(study: Any) -> tuple[int, int]:
    """(trials counted towards n_trials, trials RUNNING in another process); see the module docstring."""
    from optuna.trial import TrialState

    counted = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            running += 1
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                t.state == TrialState.FAIL and not _skipped(t)):
            counted += 1
    return counted, running


def _seen_params(study: Any) -> dict[tuple, int]:
    """Parameter sets that ran or are running -> a trial number (re-queued and skipped trials aside)."""
    from optuna.trial import TrialState

    seen: dict[tuple, int] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING or _skipped(t):
            continue
        if t.params:
            seen.setdefault(_params_key(t.params), t.number)
    return seen


def _params_key(params: dict[str, Any]) -> tuple:
    """A parameter set, comparable across trials (floats to 12 digits: a stepped float range's
    points as Optuna suggests them and as _space_points computes them may differ in the last bit)."""
    return tuple(sorted((k, f"{v:.12g}" if isinstance(v, float) else repr(v)) for k, v in params.items()))


def _space_points(distribution: Any) -> list | None:
    """Every value of a discrete distribution, None for a continuous one."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, 1 if distribution.log else distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        n = int(round((distribution.high - distribution.low) / distribution.step))
        return [distribution.low + i * distribution.step for i in range(n + 1)]
    return None


def _space_size(space: dict) -> int | None:
    """Points in a search space of discrete dimensions only; None if any dimension is continuous."""
    sizes = [_space_points(d) for d in space.values()]
    if any(s is None for s in sizes):  # an empty space has one point: the search runs once
        return None
    return math.prod(len(s) for s in sizes)


def _unseen_point(space: dict, seen: dict, space_size: int | None, attempt: int) -> dict | None:
    """A random not-yet-run point of a discrete space small enough to enumerate, else None."""
    if space_size is None or space_size > MAX_ENUMERATED_SPACE:
        return None
    names = sorted(space)
    points = [dict(zip(names, values)) for values in itertools.product(*(_space_points(space[n]) for n in names))]
    unseen = [p for p in points if _params_key(p) not in seen]
    return random.Random(len(seen) * 1000 + attempt).choice(unseen) if unseen else None

def _surplus(study: Any, number: int, n_trials: int) -> bool:
    """True when trial `number` came after the study was full: n_trials trials with lower numbers
    ran or are running. Several workers may ask at once; the storage numbers trials uniquely, so the
    lowest numbers win and the study ends with exactly n_trials."""
    from optuna.trial import TrialState

    ahead = sum(1 for t in study.get_trials(deepcopy=False)
                if t.number < number and (_counts(t) or (t.state == TrialState.RUNNING and not _skipped(t))))
    return ahead >= n_trials


def _taken_elsewhere(study: Any, trial: Any) -> int | None:
    """The number of another trial, asked by any worker, that has the same parameters as `trial`.

    Each worker marks its trial `params_set` once all its parameters are stored and only then
    looks at the others', so of two workers that picked the same point at once, at least the
    later one sees the other and yields (both may; neither then counts, and both ask again).
    """
    from optuna.trial import TrialState

    key = _params_key(trial.params)
    for t in study.get_trials(deepcopy=False):
        if t.number == trial.number or t.state == TrialState.WAITING or _skipped(t):
            continue
        final = t.state != TrialState.RUNNING or t.user_attrs.get("params_set")
        if final and t.params and _params_key(t.params) == key:
            return t.number
    return None
