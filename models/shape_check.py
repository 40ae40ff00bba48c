"""Refuse an image size a model can't take before any data is decoded, for any model.

The model config is built on PyTorch's meta device and run on two zero images there: shapes
are computed, nothing is allocated or multiplied, so a conv whose output would shrink below
one pixel, or a flatten that no longer matches its dense layer, shows up in milliseconds.
Where an operation has no meta implementation, the same check runs on CPU instead.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from common.errors import ConfigError

PROBE_CLASSES = 2  # the class count the probe builds with when the data set has yet to count them
CPU_PROBE_MAX_PIXELS = 4096 * 4096  # larger images are not probed on CPU (the probe itself would be costly)


def run_probe(build: Callable[[], torch.nn.Module], channels: int, image_size: int, device: str) -> None:
    with torch.device(device):
        model = build()
        model.train()  # training mode: batch norm must see more than one value per channel, as in training
        model(torch.zeros(2, channels, image_size, image_size))


def check_image_size(model_cfg: DictConfig, channels: int, image_size: int) -> None:
    """Raise ConfigError (naming dataset.image_size) if `model_cfg`'s model can't take such images.

    A ConfigError the model's own constructor raises passes through unchanged; other build
    errors are left to the real build to report.
    """
    overrides: dict[str, Any] = {}
    if "num_classes" in model_cfg and model_cfg.get("num_classes") is None:
        overrides["num_classes"] = PROBE_CLASSES

    def build() -> torch.nn.Module:
        return instantiate(model_cfg, **overrides)

    name = str(model_cfg.get("_target_", "model")).rsplit(".", 1)[-1]
    with torch.random.fork_rng(devices=[]):  # the probe draws no numbers the real model would have drawn
        try:
            run_probe(build, channels, image_size, "meta")
            return
        except ConfigError:
            raise
        except (RuntimeError, ValueError, NotImplementedError, IndexError):
            pass  # maybe only the meta device: try for real on CPU
        if image_size * image_size > CPU_PROBE_MAX_PIXELS:
            return
        try:
            run_probe(build, channels, image_size, "cpu")
        except ConfigError:
            raise
        except (RuntimeError, ValueError, IndexError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            shape = f"{channels}x{image_size}x{image_size}"
            raise ConfigError(f"dataset.image_size={image_size}: {name} can't take {shape} images ({reason}); "
                              f"use a larger dataset.image_size (e.g. 32) or another model") from None
