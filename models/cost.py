"""Parameter count and multiply-accumulates (MACs) per image of any model, measured, not estimated.

MACs come from PyTorch's `FlopCounterMode`, which counts the matrix products and convolutions
actually executed (FLOPs = 2 x MACs; the additions of biases, norms and activations are left
out, as in the usual closed-form counts). `python -m runner.profile` prints both for a run's
model config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelCost:
    params: int      # every parameter
    trainable: int   # those with requires_grad (what count_model_params reports, in millions)
    macs: int        # multiply-accumulates of one forward pass on one image


def model_cost(model: nn.Module, in_channels: int, image_size: int) -> ModelCost:
    """Count `model`'s parameters and its MACs on one in_channels x image_size x image_size image."""
    device = next(model.parameters()).device
    x = torch.zeros(1, in_channels, image_size, image_size, device=device)
    was_training = model.training
    # eval: batch norm accepts a batch of one; grad enabled: PyTorch's fused inference path for
    # transformer layers would hide its matrix products from the counter.
    model.eval()
    try:
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelCost(params=params, trainable=trainable, macs=counter.get_total_flops() // 2)
