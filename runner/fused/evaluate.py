"""Every trial's validation in one vmapped pass: the same figures as runner/train.py's `evaluate` per trial.

One validation batch goes through all K stacked models at once (`vmap` with the batch shared:
a stacked convolution becomes one convolution with K times the output channels), in eval mode,
at the single run's validation batch size; loss, top-1 and top-5 are summed per trial as
`evaluate` sums them.
"""

from __future__ import annotations

import torch
from torch import nn

from runner.compute import to_model_input
from runner.fused.stack import StackedModels
from runner.train import EVAL_BATCH


@torch.no_grad()
def evaluate_stack(stack: StackedModels, split, normalize: nn.Module, amp_dtype: torch.dtype | None = None,
                   channels_last: bool = False) -> list[dict[str, float]]:
    """Each trial's val_loss, val_acc and val_top5 (percent) over a whole split, in trial order."""
    stack.train(False)
    weight = next(iter(stack.params.values()))
    trials, device = weight.shape[0], weight.device
    loss_sum = torch.zeros(trials, device=device)
    top1 = torch.zeros(trials, device=device, dtype=torch.long)
    top5 = torch.zeros(trials, device=device, dtype=torch.long)
    for x, y in split.batches(EVAL_BATCH, shuffle=False, device=device):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = stack.forward(to_model_input(x, normalize, channels_last), shared=True).float()  # (K, B, C)
        losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(trials), reduction="none")
        loss_sum += losses.view(trials, -1).sum(1)
        best = logits.topk(min(5, logits.shape[2]), dim=2).indices
        top1 += (best[..., 0] == y).sum(1)
        top5 += (best == y[None, :, None]).any(dim=2).sum(1)
    n = len(split.labels)
    return [{"val_loss": loss.item() / n, "val_acc": 100.0 * one.item() / n, "val_top5": 100.0 * five.item() / n}
            for loss, one, five in zip(loss_sum, top1, top5)]
