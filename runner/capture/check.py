"""The captured step's self-check: one replayed step against the eager step from the same state.

A replay runs the very kernels the eager step runs on the same inputs, so the two agree to
rounding (some backward kernels add with atomics, in any order). A wrong replay (a graph that
kept the capture-time learning rate, recorded nothing, or froze a draw) is off by a large part
of the update, or in the loss. Checked per member (one model, or each trial of a fused group):
- the step's loss (the increase of the epoch's loss sum) within LOSS_RTOL of the eager one;
- the update of every parameter and buffer (running statistics and their counters included):
  |replayed - eager| within UPDATE_RTOL of |eager - before| (Euclidean norms over all of the
  member's tensors), plus UPDATE_ATOL of |before| for float32's rounding where the update is ~0.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

LOSS_RTOL = 1e-3
UPDATE_RTOL = 0.02
UPDATE_ATOL = 1e-6


class Verdict(enum.StrEnum):
    """summary.json's `step_check`: the self-check's outcome (a verdict on the step, not a run status)."""

    PASSED = "passed"
    FAILED = "failed"


@dataclass
class StepCheck:
    """The comparison, per member: relative loss and update differences; `reason` is None when it passed."""

    loss_diff: list[float]
    update_diff: list[float]
    reason: str | None

    @property
    def passed(self) -> bool:
        return self.reason is None

    @property
    def verdict(self) -> Verdict:
        return Verdict.PASSED if self.passed else Verdict.FAILED


def _rows(tensors: list[torch.Tensor], members: int) -> torch.Tensor:
    """All of a member's values in one float64 row (tensors of shape (members, ...) or, for one member, any)."""
    return torch.cat([t.detach().reshape(members, -1).to(torch.float64) for t in tensors], dim=1)


def compare_steps(before: list[torch.Tensor], replayed: list[torch.Tensor], eager: list[torch.Tensor],
                  members: int | None, names: list[str] | None = None) -> StepCheck:
    """Each list: the loss sum first, then every parameter and buffer, as they were before the step,
    after the replay and after the eager step. `members`: K for a fused group's (K, ...) tensors."""
    k = members or 1
    loss_before, loss_replayed, loss_eager = (_rows(ts[:1], k)[:, 0] for ts in (before, replayed, eager))
    loss_step = loss_eager - loss_before
    loss_gap = ((loss_replayed - loss_before) - loss_step).abs()
    state_before, state_replayed, state_eager = (_rows(ts[1:], k) for ts in (before, replayed, eager))
    update = (state_eager - state_before).norm(dim=1)
    gap = (state_replayed - state_eager).norm(dim=1)
    scale = state_before.norm(dim=1)
    loss_ok = loss_gap <= LOSS_RTOL * loss_step.abs() + 1e-6
    update_ok = gap <= UPDATE_RTOL * update + UPDATE_ATOL * scale
    finite = torch.isfinite(loss_gap) & torch.isfinite(gap)
    loss_diff = [_ratio(g, s) for g, s in zip(loss_gap.tolist(), loss_step.abs().tolist())]
    update_diff = [_ratio(g, u) for g, u in zip(gap.tolist(), update.tolist())]
    reason = None
    for i, ok in enumerate((loss_ok & update_ok & finite).tolist()):
        if not ok:
            who = f"{names[i]}: " if names else ""
            reason = (f"{who}the replayed step differs from the eager step (loss by {loss_diff[i]:.3g}, "
                      f"update by {update_diff[i]:.3g}, relative; tolerances {LOSS_RTOL:g} and {UPDATE_RTOL:g})")
            break
    return StepCheck(loss_diff, update_diff, reason)


def _ratio(gap: float, size: float) -> float:
    if not math.isfinite(gap):
        return math.inf
    return gap / size if size > 0 else (0.0 if gap == 0 else math.inf)
