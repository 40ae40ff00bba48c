"""The numbers behind each picture: predictions, confusion counts, activations and saliency.

Everything runs in float32 with autocast off and the model in eval mode; images come from the
split as uint8 0..255, as the loader gives them, and go through the run's own normalisation.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from data.splits import Batch, Split
from runner.run.attacks import logits_of, predict
from runner.run.epoch import EVAL_BATCH


def images_at(split: Split, indices: list[int] | torch.Tensor) -> torch.Tensor:
    """The uint8 (N, C, H, W) images at `indices`, on the CPU, resident or streamed."""
    indices = [int(i) for i in indices]
    images = getattr(split, "images")
    if isinstance(images, torch.Tensor):
        return images[torch.tensor(indices, dtype=torch.long, device=images.device)].cpu()
    return torch.stack([images[i][0] for i in indices])  # a FileImages data set: decode just these


def first_images(batches: Iterator[Batch], limit: int) -> Iterator[Batch]:
    """The batches cut off after `limit` images."""
    seen = 0
    for x, y in batches:
        if seen >= limit:
            return
        yield x[:limit - seen], y[:limit - seen]
        seen += len(y)


def sample_indices(count: int, n: int, seed: int) -> list[int]:
    """`n` distinct image indices out of `count`, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:n].tolist()


def predict_split(model: nn.Module, split: Split, normalize: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and softmax probabilities for every image of a split, in split order, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    labels, probs = [], []
    for x, y in split.batches(EVAL_BATCH, shuffle=False, device=device):
        probs.append(predict(model, normalize, x).softmax(1).cpu())
        labels.append(y.cpu())
    return torch.cat(labels), torch.cat(probs)


def confusion_counts(labels: torch.Tensor, preds: torch.Tensor, classes: int) -> np.ndarray:
    """counts[t, p]: images of true class t predicted as p."""
    flat = labels.long() * classes + preds.long()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes).numpy()


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def stage_activations(model: nn.Module, normalize: nn.Module, image: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Each conv stage's output for one uint8 image: the last convolution before the feature map
    shrinks (and the very last one), as (layer name, C x H x W), in the order they run."""
    model.eval()
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: seen.append((name, out[0].detach().cpu())))
             for name, m in conv_layers(model)]
    try:
        predict(model, normalize, image[None].to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return [(name, act) for k, (name, act) in enumerate(seen)
            if k == len(seen) - 1 or seen[k + 1][1].shape[-2:] != act.shape[-2:]]


def input_gradient(model: nn.Module, normalize: nn.Module, images01: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d(true-class score)/d(pixel) for [0, 1] images: the raw sensitivity map, (N, C, H, W)."""
    model.eval()
    x = images01.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        scores = logits_of(model(normalize(x * 255.0))).gather(1, labels[:, None]).sum()
        (grad,) = torch.autograd.grad(scores, x)
    return grad


def saliency(model: nn.Module, normalize: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Vanilla gradient saliency (Simonyan et al.): max over channels of |d score / d pixel|, (N, H, W)."""
    return input_gradient(model, normalize, images.float() / 255.0, labels).abs().amax(dim=1)


def smoothgrad(model: nn.Module, normalize: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               samples: int = 25, noise: float = 0.15, seed: int = 0) -> torch.Tensor:
    """SmoothGrad (Smilkov et al.): the gradient averaged over `samples` copies with Gaussian noise
    of std `noise` (a fraction of the [0, 1] range), then max over channels of its magnitude."""
    x = images.float() / 255.0
    generator = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros_like(x)
    for _ in range(samples):
        noisy = x + noise * torch.randn(x.shape, generator=generator, device=x.device)
        total += input_gradient(model, normalize, noisy, labels)
    return (total / samples).abs().amax(dim=1)
