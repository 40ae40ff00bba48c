"""A fused group's step captured as one CUDA graph: K trials' gather, augmentation and vmapped step.

The single run's capture machinery (runner/capture/plan.py: eligibility, tensor learning rates,
`GraphedStep`) over the fused `Learner`. Each trial's shuffle is drawn from its own stream, as
its single run draws it, outside the graph; inside the graph augmentation and dropout draw from
the CUDA generator (graph-safe, different per image and per trial, but not the single run's
draws, which the eager fused step reproduces). A trial leaving the stack (diverged, finished)
restacks the weights, so the group captures again for the trials that remain (and checks again:
each capture's first replay is compared with the eager step, runner/capture/check.py).
Eligibility is every stacked trial's (their optimizer and scheduler options may differ), and the
input takes the stack's layout (channels-last where the run asks) as the eager fused step's does.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from runner.capture.graphed_step import CapturedBatches, check_fields
from runner.capture.plan import optimizer_tensors, use_tensor_lr, why_not_captured
from runner.config.schema import switch
from runner.fused.batches import FusedBatches
from runner.fused.learner import FusedLearner
from runner.fused.stack import StackedModels
from runner.run.epoch import BatchSource
from runner.run.setup import RunData
from runner.run.step import Learner, Totals, train_step

log = logging.getLogger("runner")


class FusedCapturedEpochs(CapturedBatches):
    """A fused group's epochs through static (K, B) buffers, replaying the captured step per full batch."""

    def __init__(self, data: RunData, stack: StackedModels, batch_size: int, graph: bool = True,
                 strict: bool = False) -> None:
        super().__init__(data, [], graph, "fused-captured", strict)
        self.stack, self.batch_size = stack, batch_size
        self.learner: FusedLearner | None = None

    def start_epoch(self, learner: Learner) -> Totals:
        if learner is not self.learner:  # members left: the stack was restacked, capture again
            self._rebuild(learner)
        return super().start_epoch(learner)

    def _rebuild(self, learner: FusedLearner) -> None:
        """Static buffers, totals and a fresh capture for these trials (the stack was restacked for them)."""
        trials = learner.trials
        self.learner = learner
        self.static_idx = torch.zeros(len(trials), self.batch_size, dtype=torch.long, device=self.device)
        self.totals = Totals(self.device, len(trials))
        self.summaries = [[t.record.summary, *(f.record.summary for f in t.followers)] for t in trials]
        self.replay, self.steps = None, 0
        self.pending = not self.failed  # after a failed capture or check the group stays eager

    def draw_order(self) -> torch.Tensor:
        orders = []
        for trial in self.learner.trials:
            with trial.rng.active():  # this trial's shuffle, as its single run draws it
                orders.append(torch.randperm(len(self.labels)))
        return torch.stack(orders)

    def gathered_step(self, idx: torch.Tensor, cache_casts: bool = True) -> None:
        k, b = idx.shape
        images = self.data.augment(self.images[idx.reshape(-1)])
        x = self.data.normalize(images).reshape(k, b, *images.shape[1:])
        if self.stack.channels_last:  # the layout the stack's forward wants, as the eager fused step's
            x = self.stack.stack_inputs(list(x.unbind(0)))
        train_step(self.learner, x, self.labels[idx], self.totals, cache_casts)

    def live(self) -> list[torch.Tensor]:
        return [*self.stack.params.values(), *self.stack.buffers.values(), self.totals.loss_sum,
                self.totals.correct, *optimizer_tensors([t.optimizer for t in self.learner.trials])]

    def checked(self) -> list[torch.Tensor]:
        return [self.totals.loss_sum, *self.stack.params.values(), *self.stack.buffers.values()]

    def member_count(self) -> int | None:
        return len(self.learner.trials)

    def member_names(self) -> list[str] | None:
        return [f"run {t.record.folder.path}" for t in self.learner.trials]


def plan_fused_step(data: RunData, stack: StackedModels, trials: list[Any], graph: bool = True) -> BatchSource:
    """The fused group's batch source: the captured step's, or the eager `FusedBatches` (one log
    line saying why not captured); fills each trial's summary step fields."""
    first = trials[0]
    reason = None
    for trial in trials:  # trials may differ in optimizer and scheduler options: each must be graph-safe
        why = why_not_captured(trial.cfg, data, trial.optimizer, trial.scheduler, None, graph)
        if why is not None:
            reason = why if trial is first else f"run {trial.record.folder.path}: {why}"
            break
    for trial in [*trials, *(f for t in trials for f in t.followers)]:
        trial.record.summary.update(step_path="fused-eager" if reason else "fused-captured", capture_s=None,
                                    step_fallback=reason, **check_fields(None, 0))
    batch_size = int(first.cfg.batch_size)
    if reason is not None:
        log.info("fused group, eager step: %s", reason)
        return FusedBatches(data, stack, batch_size)
    for trial in trials:
        use_tensor_lr(trial.optimizer, data.device)
    strict = switch(first.cfg.compute.get("cuda_graph", "auto")) == "true"
    return FusedCapturedEpochs(data, stack, batch_size, graph, strict)
