"""SimpleNet, the small conv net of the scene-recognition homework.

Two conv -> max-pool -> ReLU stages, then a hidden dense layer and the output layer. On the
homework's 64x64 greyscale scenes that is conv 10@5x5, pool 3, conv 20@5x5, pool 3, 500 -> 100
-> classes; here the flatten size follows `image_size`, and the homework's "final" variant
(batch norm, dropout, wider convs) is a few config values away.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from common.errors import ConfigError
from models.layers import check_conv_impl, conv2d


class SimpleNet(nn.Module):
    def __init__(self, in_channels: int = 1, image_size: int = 64, num_classes: int = 15,
                 channels: Sequence[int] = (10, 20), kernel_size: int = 5, pool: int = 3, hidden: int = 100,
                 batch_norm: bool = False, dropout: float = 0.0, conv_impl: str = "torch") -> None:
        super().__init__()
        check_conv_impl(conv_impl)
        layers, c_in, side = [], in_channels, int(image_size)
        for c_out in channels:
            side = (side - kernel_size + 1) // pool
            if side < 1:
                raise ConfigError(f"simplenet: a {image_size}px image shrinks to nothing after {len(channels)} "
                                  f"conv({kernel_size})/pool({pool}) stages; use a larger dataset.image_size "
                                  f"or a smaller model.pool")
            layers.append(conv2d(conv_impl, c_in, int(c_out), kernel_size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(c_out)))
            layers += [nn.MaxPool2d(pool), nn.ReLU(inplace=True)]
            c_in = int(c_out)
        self.cnn_layers = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU(inplace=True)]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.fc_layers = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_layers(self.cnn_layers(x))
