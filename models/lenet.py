"""LeNet-5 exactly as the course specifies."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from common.errors import ConfigError


class LeNet(nn.Module):
    """conv 6@5x5 + ReLU + maxpool 2; conv 16@5x5 + ReLU + maxpool 2; flatten; 256; 128; classes.

    With `return_shapes=True` (the course's interface) `forward` returns ``(logits, shape_dict)``
    where ``shape_dict[k]`` is the output shape of stage k (1..6) as a list. The training config
    turns it off so the hot loop builds no dict per step.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 100,
                 return_shapes: bool = True) -> None:
        super().__init__()
        self.return_shapes = return_shapes
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, stride=1)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, stride=1)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ConfigError(f"dataset.image_size={image_size} is too small for LeNet, which needs at least "
                              f"16x16 pixels; use dataset.image_size=16 or more (the course uses 32)")
        self.fc1 = nn.Linear(16 * side * side, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, dict[int, list[int]]]:
        pooled1 = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        pooled2 = F.max_pool2d(F.relu(self.conv2(pooled1)), 2, 2)
        flat = torch.flatten(pooled2, 1)
        hidden1 = F.relu(self.fc1(flat))
        hidden2 = F.relu(self.fc2(hidden1))
        logits = self.fc3(hidden2)
        if not self.return_shapes:
            return logits
        stages = (pooled1, pooled2, flat, hidden1, hidden2, logits)
        return logits, {k: list(t.shape) for k, t in enumerate(stages, 1)}
