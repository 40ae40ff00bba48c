"""Fine-tuning a torchvision ResNet: ImageNet weights, a new head, and a freezing strategy.

The backbone is torchvision's own (resnet18 by default, resnet50 for the course's larger run);
its head is replaced by a fresh Linear for the data set's classes. What stays trainable is the
`freeze` strategy:

    all_but_head  only the new head learns (feature extraction)
    first_k       the first `freeze_k` of the five stages (stem, layer1..layer4) are frozen
    none          everything learns

Frozen stages also keep their batch-norm statistics: `train()` leaves them in eval mode, so
"frozen" means the stage computes exactly what it did before fine-tuning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from common.errors import ConfigError

log = logging.getLogger("runner")

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
FREEZE = ("all_but_head", "first_k", "none")
PRETRAINED_SIZE = 224


class FineTuneResNet(nn.Module):
    """torchvision's `arch` with a `num_classes` head and the `freeze` strategy applied.

    Args:
        pretrained: start from ImageNet weights (from `weights_path` if set, else downloaded by
            torchvision); false: random init, for tests and from-scratch baselines.
        weights_path: a torchvision state_dict for `arch` saved to disk (e.g. the file torchvision
            caches under ~/.cache/torch/hub/checkpoints); its 1000-class `fc` is dropped.
        freeze / freeze_k: see the module docstring; freeze_k is 0..5 and only read for first_k.
        in_channels: 3 uses the weights as they are; 1 (greyscale) sums the first conv's
            filters over RGB, which responds to a grey image as the RGB filters would.
    """

    def __init__(self, in_channels: int = 3, image_size: int = PRETRAINED_SIZE, num_classes: int = 10,
                 arch: str = "resnet18", pretrained: bool = True, weights_path: str | None = None,
                 freeze: str = "all_but_head", freeze_k: int = 3) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"model.arch={arch} is not supported; use one of {', '.join(ARCHS)}")
        if freeze not in FREEZE:
            raise ConfigError(f"model.freeze={freeze} is not known; use all_but_head, first_k or none")
        self.backbone = torchvision.models.get_model(arch, weights=None)
        if weights_path is not None or pretrained:
            state = load_weights_file(weights_path) if weights_path is not None else download_weights(arch)
            load_backbone_state(self.backbone, state, source=weights_path or f"torchvision's {arch} weights")
            if image_size != PRETRAINED_SIZE:
                log.warning("fine-tuning %s at %dpx: its weights were trained at %dpx; set dataset.image_size=%d "
                            "(conf/experiment/finetune_resnet18.yaml does)", arch, image_size, PRETRAINED_SIZE,
                            PRETRAINED_SIZE)
        if in_channels != 3:
            self.backbone.conv1 = adapt_input_conv(self.backbone.conv1, in_channels)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, num_classes)

        stages = self.stages()
        frozen = {"all_but_head": len(stages), "first_k": int(freeze_k), "none": 0}[freeze]
        if not 0 <= frozen <= len(stages):
            raise ConfigError(f"model.freeze_k={freeze_k} is invalid: use 0..{len(stages)} "
                              f"(stem, layer1, layer2, layer3, layer4)")
        self.frozen_stages = frozen
        for stage in stages[:frozen]:
            for p in stage.parameters():
                p.requires_grad_(False)
        self.train()

    def stages(self) -> list[nn.Module]:
        """The five stages `freeze_k` counts: the stem (conv1 + bn1), then layer1..layer4."""
        b = self.backbone
        return [nn.ModuleList([b.conv1, b.bn1]), b.layer1, b.layer2, b.layer3, b.layer4]

    def train(self, mode: bool = True) -> "FineTuneResNet":
        super().train(mode)
        for stage in self.stages()[:self.frozen_stages]:
            stage.eval()  # frozen stages keep their batch-norm running statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def download_weights(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for `arch` (its cache first, then the download)."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # offline, proxy, corrupt cache: all mean "give me a file instead"
        raise ConfigError(
            f"could not get {arch}'s ImageNet weights ({type(e).__name__}); download {weights.url} "
            f"and pass model.weights_path=/path/to/{weights.url.rsplit('/', 1)[-1]}, "
            f"or use model.pretrained=false") from e


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.weights_path={path} does not exist; point it at a torchvision state_dict "
                          f"file for model.arch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"model.weights_path={path} is not a loadable state_dict ({type(e).__name__})") from e
    for key in ("state_dict", "model"):  # tolerate a checkpoint that wraps the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_backbone_state(backbone: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every weight but the old head, which is replaced anyway and may have another class count."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise ConfigError(f"{source} does not fit this backbone (e.g. key {bad!r}); check model.arch")


def adapt_input_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The first conv for `in_channels` inputs, keeping what its RGB filters detect."""
    weight = conv.weight.detach()
    if in_channels == 1:
        weight = weight.sum(dim=1, keepdim=True)
    else:  # repeat RGB across the channels, scaled so the response keeps its size
        repeats = -(-in_channels // 3)
        weight = weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (3 / in_channels)
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    new.weight.data.copy_(weight)
    return new
