"""A fused group's step captured as one CUDA graph: K trials' gather, augmentation and vmapped step.

The single run's capture machinery (runner/capture.py: eligibility, tensor learning rates,
`GraphedStep`) over the fused `Learner`. Each trial's shuffle is drawn from its own stream, as
its single run draws it, outside the graph; inside the graph augmentation and dropout draw from
the CUDA generator (graph-safe, different per image and per trial, but not the single run's
draws, which the eager fused step reproduces). A trial leaving the stack (diverged, finished)
restacks the weights, so the group captures again for the trials that remain (and checks again:
each capture's first replay is compared with the eager step, runner/capture_check.py).
Eligibility is every stacked trial's (their optimizer and scheduler options may differ), and the
input takes the stack's layout (channels-last where the run asks) as the eager fused step's does.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from data.splits import ResidentSplit
from runner.capture import optimizer_tensors, use_tensor_lr, why_not_captured
from runner.graphed_step import GraphedStep, check_fields
from runner.config import switch
from runner.compute import to_model_input
from runner.fused.learner import FusedLearner
from runner.fused.stack import StackedModels
from runner.step import Totals, train_step

log = logging.getLogger("runner")


class FusedCapturedEpochs(GraphedStep):
    def __init__(self, stack: StackedModels, split: ResidentSplit, batch_size: int, augment: nn.Module,
                 normalize: nn.Module, amp_dtype: torch.dtype | None, graph: bool = True,
                 strict: bool = False) -> None:
        super().__init__(split.images.device, [], graph, "fused-captured", strict)
        self.stack, self.augment, self.normalize, self.amp_dtype = stack, augment, normalize, amp_dtype
        self.images, self.labels, self.batch_size = split.images, split.labels, batch_size
        self.members: list[Any] = []

    def _rebuild(self, trials: list[Any]) -> None:
        """Static buffers, totals and a fresh capture for these trials (the stack was restacked for them)."""
        self.members = list(trials)
        self.learner = FusedLearner(self.stack, self.members)
        self.static_idx = torch.zeros(len(trials), self.batch_size, dtype=torch.long, device=self.device)
        self.totals = Totals(self.device, len(trials))
        self.summaries = [[t.record.summary, *(f.record.summary for f in t.followers)] for t in trials]
        self.replay, self.steps = None, 0
        self.pending = not self.failed  # after a failed capture or check the group stays eager

    def train_epoch(self, trials: list[Any]) -> list[dict[str, float]]:
        """One epoch of every trial in `trials` (the stack's members, in its order)."""
        if [id(t) for t in trials] != [id(t) for t in self.members]:
            self._rebuild(trials)
        self.stack.train()
        self.totals.reset()
        n, batch = len(self.labels), self.batch_size
        orders = []
        for trial in trials:
            with trial.rng.active():  # this trial's shuffle, as its single run draws it
                orders.append(torch.randperm(n))
        order = torch.stack(orders).to(self.device)
        full = n // batch
        with self.on_device():
            for i in range(full):
                self.static_idx.copy_(order[:, i * batch:(i + 1) * batch], non_blocking=True)
                self.step()
                self.learner.after_step()
            if n % batch:  # the last partial batch, eagerly: every image is seen once per epoch
                self._gathered_step(order[:, full * batch:])
                self.learner.after_step()
        self.totals.seen = n
        return self.totals.rows()

    def body(self, cache_casts: bool) -> None:
        self._gathered_step(self.static_idx, cache_casts)

    def _gathered_step(self, idx: torch.Tensor, cache_casts: bool = True) -> None:
        k, b = idx.shape
        images = self.augment(self.images[idx.reshape(-1)])
        x = to_model_input(images, self.normalize, False).reshape(k, b, *images.shape[1:])
        if self.stack.channels_last:  # the layout the stack's forward wants, as the eager fused step's
            x = self.stack.stack_inputs(list(x.unbind(0)))
        train_step(self.learner, x, self.labels[idx], self.totals, self.amp_dtype, cache_casts)

    def live(self) -> list[torch.Tensor]:
        return [*self.stack.params.values(), *self.stack.buffers.values(), self.totals.loss_sum,
                self.totals.correct, *optimizer_tensors([t.optimizer for t in self.members])]

    def checked(self) -> list[torch.Tensor]:
        return [self.totals.loss_sum, *self.stack.params.values(), *self.stack.buffers.values()]

    def member_count(self) -> int | None:
        return len(self.members)

    def member_names(self) -> list[str] | None:
        return [f"run {t.record.folder.path}" for t in self.members]


def plan_fused_step(stack: StackedModels, trials: list[Any], split: Any, augment: nn.Module, normalize: nn.Module,
                    amp_dtype: torch.dtype | None, device: torch.device,
                    graph: bool = True) -> FusedCapturedEpochs | None:
    """The captured path for a fused group, or None (eager, one log line saying why); fills each trial's summary."""
    first = trials[0]
    reason = None
    for trial in trials:  # trials may differ in optimizer and scheduler options: each must be graph-safe
        why = why_not_captured(trial.cfg, device, split, trial.optimizer, trial.scheduler, augment, None, graph)
        if why is not None:
            reason = why if trial is first else f"run {trial.record.folder.path}: {why}"
            break
    for trial in [*trials, *(f for t in trials for f in t.followers)]:
        trial.record.summary.update(step_path="fused-eager" if reason else "fused-captured", capture_s=None,
                                    step_fallback=reason, **check_fields(None, 0))
    if reason is not None:
        log.info("fused group, eager step: %s", reason)
        return None
    for trial in trials:
        use_tensor_lr(trial.optimizer, device)
    strict = switch(first.cfg.compute.get("cuda_graph", "auto")) == "true"
    return FusedCapturedEpochs(stack, split, int(first.cfg.batch_size), augment, normalize, amp_dtype, graph,
                               strict)
