"""The configurable 5-block CNN of the iNaturalist assignment.

Five blocks of conv -> [batch norm] -> activation -> 2x2 max-pool, then one dense layer and
the output layer. Every choice the assignment sweeps over is a constructor argument, so each
is one `model.<key>=...` override away. The flatten size is worked out from `image_size`, so
the same config runs on 32x32 digits and on 224x224 iNaturalist images.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from common.errors import ConfigError
from models.layers import activation as make_activation
from models.layers import check_conv_impl, conv2d

BLOCKS = 5
ORGANISATIONS = ("same", "double", "half")
DROPOUT_PLACES = ("dense", "conv", "all")


def filter_counts(filters: int, organisation: str) -> list[int]:
    """Filters per block from the first block's count: same (m each), double (m, 2m, ...), half (m, m/2, ...)."""
    if organisation == "same":
        return [filters] * BLOCKS
    if organisation == "double":
        return [filters * 2**i for i in range(BLOCKS)]
    if organisation == "half":
        return [max(1, filters // 2**i) for i in range(BLOCKS)]
    raise ConfigError(f"model.filter_organisation={organisation} is not known; use same, double or half")


def _per_block(value: int | Sequence[int], key: str) -> list[int]:
    if isinstance(value, int):
        return [value] * BLOCKS
    values = [int(v) for v in value]
    if len(values) != BLOCKS:
        raise ConfigError(f"model.{key} needs one value or {BLOCKS} (one per block), got {len(values)}")
    return values


class CNN5(nn.Module):
    """conv-act-pool x5 -> dense -> output, with the assignment's knobs.

    Args:
        filters: filters in the first block; `filter_organisation` gives the rest.
        kernel_size: one size for all blocks, or a list of five.
        padding: 'same' (keeps the size, so only the pools shrink it), 'valid', or a pixel count.
        activation: relu, leaky_relu, gelu, silu, mish or elu (used in every block and the dense layer).
        batch_norm: batch norm between each conv and its activation (the conv then drops its
            bias, which the norm's shift makes redundant).
        dropout / dropout_at: the rate, and where: after the dense layer ('dense'), after
            each block ('conv', channel-wise Dropout2d), or both ('all').
        dense_units: width of the dense layer.
        conv_impl: 'torch' or 'custom' (the unfold/fold convolution of models.custom_conv).
    """

    def __init__(self, in_channels: int = 3, image_size: int = 224, num_classes: int = 10, filters: int = 32,
                 filter_organisation: str = "same", kernel_size: int | Sequence[int] = 3,
                 padding: int | str = "same", activation: str = "relu", batch_norm: bool = False,
                 dropout: float = 0.0, dropout_at: str = "dense", dense_units: int = 128,
                 conv_impl: str = "torch") -> None:
        super().__init__()
        if dropout_at not in DROPOUT_PLACES:
            raise ConfigError(f"model.dropout_at={dropout_at} is not known; use dense, conv or all")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} is invalid: use a rate in [0, 1)")
        check_conv_impl(conv_impl)
        channels = filter_counts(int(filters), filter_organisation)
        kernels = _per_block(kernel_size, "kernel_size")
        conv_dropout = dropout if dropout_at in ("conv", "all") else 0.0
        dense_dropout = dropout if dropout_at in ("dense", "all") else 0.0

        blocks, side, c_in = [], int(image_size), in_channels
        for i, (c_out, k) in enumerate(zip(channels, kernels), 1):
            side = _conv_side(side, k, padding)
            if side < 2:
                raise ConfigError(
                    f"cnn5: a {image_size}px image is {side}px before block {i}'s 2x2 pool "
                    f"(kernel_size={kernel_size}, padding={padding}); use model.padding=same, "
                    f"a smaller model.kernel_size or a larger dataset.image_size")
            side //= 2
            layers = [conv2d(conv_impl, c_in, c_out, k, padding=padding, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [make_activation(activation), nn.MaxPool2d(2)]
            if conv_dropout > 0:
                # Neighbouring activations are correlated, so drop whole channels, not pixels.
                layers.append(nn.Dropout2d(conv_dropout))
            blocks.append(nn.Sequential(*layers))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        head = [nn.Flatten(), nn.Linear(c_in * side * side, dense_units), make_activation(activation)]
        if dense_dropout > 0:
            head.append(nn.Dropout(dense_dropout))
        head.append(nn.Linear(dense_units, num_classes))
        self.classifier = nn.Sequential(*head)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init: PyTorch's default draws weights with a third of the variance that keeps a
        # ReLU layer's output variance, and over seven plain layers without batch norm the
        # signal fades until SGD barely moves (on digits it stayed at chance for epochs).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _conv_side(side: int, kernel: int, padding: int | str) -> int:
    """Output side of a stride-1 conv."""
    if padding == "same":
        return side
    pad = 0 if padding == "valid" else int(padding)
    return side + 2 * pad - kernel + 1
