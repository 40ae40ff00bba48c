"""The training step, once: forward under autocast, loss, backward, clip, optimizer step, totals.

A plain step (runner/run/train.py), a fused step of K trials (runner/fused/loop.py) and a step
captured as a CUDA graph (runner/capture/plan.py) are this one function over a different `Learner`,
run by the one epoch loop (runner/run/epoch.py) from a different batch source. `train_step` is everything a CUDA graph
can hold (device work only, no host sync, no Python state that must change per step);
`Learner.after_step` is the rest (a per-step scheduler, which is Python arithmetic writing the
learning rate into the optimizer), so a caller that replays a graph runs it after each replay.
The running loss sum and correct count stay on the device and are read once per epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

if TYPE_CHECKING:
    from runner.run.setup import Optimization


class Learner:
    """What `train_step` trains: one model (`SingleLearner`) or a stack of trials (runner/fused/loop.py).

    `updates()` yields (parameters, grad_clip, optimizer, per-step scheduler or None) for each
    independently optimised member: one for a single model, one per trial for a fused stack.
    `members` is None for one model (its totals have shape ()), K for a fused stack of K trials.
    """

    amp_dtype: torch.dtype | None = None  # autocast's dtype; None: full precision
    members: int | None = None

    def train(self) -> None:
        """Training mode (dropout on, batch-norm statistics updated)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss: a scalar for one model, shape (K,) for K trials (backward runs on its sum)."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        raise NotImplementedError

    def updates(self) -> Iterator[tuple[Iterator[nn.Parameter], float | None, torch.optim.Optimizer, object]]:
        raise NotImplementedError

    def step_optimizers(self) -> None:
        """Clip and step each member's optimizer (device work only: a graph can hold it)."""
        for params, grad_clip, optimizer, _ in self.updates():
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()

    def after_step(self) -> None:
        """Per-step schedulers: Python, so outside any graph, after each step or replay."""
        for _, _, _, scheduler in self.updates():
            if scheduler is not None:
                scheduler.step()


class SingleLearner(Learner):
    """One model, its loss function, optimizer and scheduler (stepped here when it steps per batch)."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimization: Optimization,
                 grad_clip: float | None, amp_dtype: torch.dtype | None) -> None:
        self.model, self.loss_fn, self.grad_clip, self.amp_dtype = model, loss_fn, grad_clip, amp_dtype
        self.optimizer, self.scheduler = optimization.optimizer, optimization.scheduler
        self.step_scheduler = optimization.step_scheduler

    def train(self) -> None:
        self.model.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits, y)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def updates(self):
        # Parameters the optimizer holds: a compiled wrapper's are the model's own.
        params = (p for group in self.optimizer.param_groups for p in group["params"])
        yield params, self.grad_clip, self.optimizer, self.step_scheduler


class Totals:
    """Running loss sum and correct count on the device (shape () for one model, (K,) for K trials)."""

    def __init__(self, device: torch.device, members: int | None = None) -> None:
        shape = () if members is None else (members,)
        self.loss_sum = torch.zeros(shape, device=device)
        self.correct = torch.zeros(shape, device=device, dtype=torch.long)
        self.seen = 0

    def reset(self) -> None:
        """In place: a captured graph holds these very tensors."""
        self.loss_sum.zero_()
        self.correct.zero_()
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * y.shape[-1]
        self.correct += (logits.detach().argmax(-1) == y).sum(-1)

    def rows(self) -> list[dict[str, float]]:
        """One row per member; the one host sync of the epoch."""
        losses = self.loss_sum.reshape(-1).tolist()
        correct = self.correct.reshape(-1).tolist()
        return [{"train_loss": s / self.seen, "train_acc": 100.0 * c / self.seen} for s, c in zip(losses, correct)]


def train_step(learner: Learner, x: torch.Tensor, y: torch.Tensor, totals: Totals, cache_casts: bool = True) -> None:
    """One optimisation step of every member on the batch (x, y), added to `totals`.

    `seen` is counted by the caller (a Python int: a graph replay can't count it).
    `cache_casts=False` under graph capture: autocast's cast-weight cache must not outlive it.
    """
    amp_dtype = learner.amp_dtype
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None,
                        cache_enabled=cache_casts):
        logits = learner.forward(x)
        loss = learner.loss(logits, y)
    learner.zero_grad()
    (loss if loss.dim() == 0 else loss.sum()).backward()  # trials share no weights: each grad is its own
    learner.step_optimizers()
    totals.add(loss, logits, y)
