"""Training augmentations that work on a whole batch at once, with per-image randomness.

Each one is an `nn.Module` taking a uint8 batch (N, C, H, W) already on the training device, so
the data stays resident and nothing goes through PIL per sample; `Normalize` then makes it float.
Validation never sees them.
Transforms with no batched form (rotation, colour jitter...) run per image through torchvision's
v2 transforms with `PerImage`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class RandomHorizontalFlip(nn.Module):
    """Flip each image left-right with probability p, drawn independently per image."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(-1), x)


class RandomCrop(nn.Module):
    """Zero-pad by `padding`, then crop back to the input size at a random offset per image."""

    def __init__(self, padding: int = 4) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.padding
        padded = nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1), device=x.device)
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


class PerImage(nn.Module):
    """Apply a per-image transform (e.g. a torchvision.transforms.v2.Compose) to each image of a batch."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.transform(img) for img in x])


class Compose(nn.Sequential):
    """A list of augmentations from config, applied in order (`steps: [...]`)."""

    def __init__(self, steps: list[nn.Module]) -> None:
        super().__init__(*steps)


class Normalize(nn.Module):
    """uint8 batch -> float, scaled to [0, 1] and standardised with the data set's mean/std in one pass."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(std).view(1, -1, 1, 1) * 255.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) * self.inv_std
