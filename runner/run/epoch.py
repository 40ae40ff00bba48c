"""One pass each way: the one training epoch loop, its batch sources, and evaluation.

`train_epoch(learner, source)` is the epoch of every path. What differs is only
- the learner (runner/run/step.py): one model, or a fused stack of K trials (runner/fused/learner.py);
- the batch source: where the epoch's batches come from and how one becomes a step:
  `ShuffledBatches` here (a run's shuffled, augmented, possibly attacked batches),
  `FusedBatches` (runner/fused/batches.py: each trial's own shuffle, stacked), and the captured
  sources (runner/capture/graphed_step.py `CapturedBatches`: index slices of the resident data, each
  full one a replay of the step captured as a CUDA graph; runner/capture/plan.py for a run,
  runner/fused/capture.py for a fused group).
Every step is runner/run/step.py's `train_step`; per-step schedulers run after it, outside any graph.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch
from torch import nn

from data.splits import Split
from runner.run.compute import to_model_input
from runner.run.setup import RunData
from runner.run.step import Learner, Totals, train_step

EVAL_BATCH = 1024  # validation batch size: it changes no result, only speed


class Progress(Protocol):
    def update(self, n: int) -> Any: ...


class BatchSource:
    """Where one epoch's batches come from (`batches`), and how one is trained on (`train_on`).

    The base trains on ready (input, labels) pairs with the one step; the captured sources
    override `train_on` to replay a graph. `start_epoch` gives the totals the epoch adds to.
    """

    def __init__(self, data: RunData) -> None:
        self.data = data
        self.totals: Totals | None = None

    def start_epoch(self, learner: Learner) -> Totals:
        """Zeroed totals for the learner's members (a captured source resets the ones its graph holds)."""
        self.totals = Totals(self.data.device, learner.members)
        return self.totals

    def batches(self) -> Iterator[Any]:
        raise NotImplementedError

    def train_on(self, learner: Learner, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        train_step(learner, x, y, self.totals)
        self.totals.seen += y.shape[-1]


def train_epoch(learner: Learner, source: BatchSource, progress: Progress | None = None) -> list[dict[str, float]]:
    """One pass over the training data: one row (train loss, train acc) per member of the learner."""
    learner.train()
    totals = source.start_epoch(learner)
    for batch in source.batches():
        source.train_on(learner, batch)
        learner.after_step()
        if progress is not None:
            progress.update(1)
    return totals.rows()


class ShuffledBatches(BatchSource):
    """A run's epoch: its training split shuffled, each batch augmented, attacked where the run
    trains adversarially (conf/adversary/), normalised."""

    def __init__(self, data: RunData, batch_size: int, adversary: Any = None) -> None:
        super().__init__(data)
        self.batch_size, self.adversary = batch_size, adversary

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.data.splits["train"].batches(self.batch_size, shuffle=True, device=self.data.device):
            yield self.data.augment(x), y

    def train_on(self, learner: Learner, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        if self.adversary is not None:  # train on the batch's attack instead
            x = self.adversary.perturb(learner.model, x, y, self.data.normalize)
        super().train_on(learner, (self.data.model_input(x), y))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, normalize: nn.Module, amp_dtype: torch.dtype | None = None,
             channels_last: bool = False) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy (percent) over a whole split."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    for x, y in split.batches(EVAL_BATCH, shuffle=False, device=device):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(to_model_input(x, normalize, channels_last)).float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (best[:, 0] == y).sum()
        top5 += (best == y[:, None]).any(dim=1).sum()
    n = len(split.labels)
    return {"val_loss": loss_sum.item() / n, "val_acc": 100.0 * top1.item() / n, "val_top5": 100.0 * top5.item() / n}
