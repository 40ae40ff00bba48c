"""A fused group's eager batch source for the one epoch loop (runner/run/epoch.py).

Each trial draws its own shuffle and augmentation from its own stream (runner/fused/rng.py),
exactly as its single run draws them; the K batches are stacked into one (K, B, ...) input in
the stack's layout, normalised at once, and trained on by the one step, K trials wide.
"""

from __future__ import annotations

from typing import Iterator

import torch

from runner.fused.learner import FusedLearner
from runner.fused.stack import StackedModels
from runner.run.epoch import BatchSource
from runner.run.setup import RunData
from runner.run.step import Learner, Totals


class FusedBatches(BatchSource):
    def __init__(self, data: RunData, stack: StackedModels, batch_size: int) -> None:
        super().__init__(data)
        self.stack, self.batch_size = stack, batch_size
        self.trials: list = []

    def start_epoch(self, learner: Learner) -> Totals:
        assert isinstance(learner, FusedLearner)
        self.trials = learner.trials  # this epoch's members, in the stack's order
        return super().start_epoch(learner)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        split, device = self.data.splits["train"], self.data.device
        batch_iters = [split.batches(self.batch_size, shuffle=True, device=device) for _ in self.trials]
        while True:
            xs, ys = [], []
            for trial, batches in zip(self.trials, batch_iters):
                with trial.rng.active():  # the permutation (first batch) and the flips are this trial's
                    batch = next(batches, None)
                    if batch is None:
                        return
                    xs.append(self.data.augment(batch[0]))
                    ys.append(batch[1])
            yield self.data.normalize(self.stack.stack_inputs(xs)), torch.stack(ys)  # normalised at once
