"""A fused group of trials as the one training step's `Learner` (runner/run/step.py).

The forward is the stack's one vmapped call; the loss is each trial's own cross-entropy (its
label smoothing) stacked to shape (K,); after backward every trial's clip and optimizer step run
through runner/fused/update.py (one stacked update when all trials use plain SGD, else each trial
its own slice of the stacked gradients and its own optimizer), then each trial's scheduler when it
steps per batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from runner.fused.stack import StackedModels
from runner.fused.update import step_optimizers
from runner.run.step import Learner


class FusedLearner(Learner):
    def __init__(self, stack: StackedModels, trials: list[Any], amp_dtype: torch.dtype | None) -> None:
        self.stack, self.trials, self.amp_dtype = stack, trials, amp_dtype
        self.members = len(trials)

    def train(self) -> None:
        self.stack.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack.forward(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([nn.functional.cross_entropy(logits[k], y[k], label_smoothing=t.label_smoothing)
                            for k, t in enumerate(self.trials)])

    def zero_grad(self) -> None:
        self.stack.zero_grad()

    def step_optimizers(self) -> None:
        step_optimizers(self.stack, self.trials)  # hands out the gradients itself where it needs them

    def updates(self):
        for trial in self.trials:
            yield (trial.model.parameters(), trial.grad_clip, trial.optimizer,
                   trial.scheduler if trial.interval == "step" else None)
