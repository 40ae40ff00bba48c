"""A run's set-up from its config, once: the part a run, a fused group, eval and analyze share.

`open_data(cfg, device)` gives a `RunData`: the device and precision, the data set and its
splits, and how a batch of uint8 images becomes the model's input (augmentation for training,
normalisation, memory layout). A single run (runner/run/train.py) opens it for itself, a fused
group (runner/fused/loop.py) once for all its trials, and eval and analyze (runner/eval.py)
for a checkpoint's config, without augmentation. The model, optimizer and scheduler are each
run's (or trial's) own: `build_optimization` builds the optimizer and scheduler for a model.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from data.augment import Normalize
from data.base import ImageDataset
from data.splits import Split, open_splits
from models.shape_check import check_image_size
from runner.config.schema import switch
from runner.run.build import build, build_scheduler
from runner.run.compute import configure_compute, to_model_input


@dataclass
class RunData:
    """What a config opens once: device, precision, data set, splits, and the input pipeline."""

    device: torch.device
    amp_dtype: torch.dtype | None
    dataset: ImageDataset
    splits: dict[str, Split]
    augment: nn.Module  # training only; nn.Identity where the data is only evaluated
    normalize: nn.Module
    channels_last: bool

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised, in channels-last layout where the run asks for it."""
        return to_model_input(x, self.normalize, self.channels_last)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.splits["train"].labels) / batch_size)


@dataclass
class Optimization:
    """A model's optimizer and scheduler, and whether the scheduler steps per batch ("step") or per epoch."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    interval: str

    @property
    def step_scheduler(self) -> Any:
        """The scheduler the training step runs after each batch, or None (the epoch loop's to step)."""
        return self.scheduler if self.interval == "step" else None


def build_optimization(cfg: DictConfig, model: nn.Module, steps_per_epoch: int) -> Optimization:
    """The optimizer over the model's trainable parameters, and its scheduler, as the config says."""
    optimizer = build(cfg.optimizer, "optimizer", params=[p for p in model.parameters() if p.requires_grad])
    scheduler, interval = build_scheduler(cfg.scheduler, optimizer, steps_per_epoch)
    return Optimization(optimizer, scheduler, interval)


def seed_everything(seed: int | None) -> None:
    """Seed every generator we draw from; `seed=0` is a seed like any other (None: don't seed)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(cfg: DictConfig, device: torch.device) -> tuple[ImageDataset, dict[str, Split]]:
    """Instantiate the data set config and open its splits; fill in a class count left as null."""
    dataset = build(cfg.dataset, "dataset")
    splits = open_splits(dataset, str(cfg.compute.data_path), device, cfg.get("num_workers", 0),
                         switch(cfg.compute.get("data_on_device", "auto")))
    if cfg.dataset.num_classes is None:
        with open_dict(cfg):
            cfg.dataset.num_classes = dataset.num_classes
    return dataset, splits


def open_data(cfg: DictConfig, device: torch.device, parallel_jobs: int = 1, training: bool = True) -> RunData:
    """Compute settings, the image-size check (before any data is decoded), data set, splits, inputs.

    Draws nothing from torch's generator, so a run seeded before or after it builds the same model.
    `parallel_jobs`: how many jobs share the machine (compute.threads=auto shares the cores).
    `training=False` (eval, analyze): no augmentation is built; a stored config's may not be trusted.
    """
    amp_dtype = configure_compute(cfg.compute, device, parallel_jobs)
    check_image_size(cfg.model, cfg.dataset.channels, cfg.dataset.image_size)
    dataset, splits = load_data(cfg, device)
    augment = build(cfg.augmentation, "augmentation").to(device) if training else nn.Identity()
    normalize = Normalize(dataset.mean, dataset.std).to(device)
    return RunData(device, amp_dtype, dataset, splits, augment, normalize, bool(cfg.compute.get("channels_last")))


def compile_model(model: nn.Module, data: RunData, loss_fn: nn.Module, batch_size: int) -> tuple[nn.Module, float]:
    """torch.compile the model and pay its compile time up front, so it's reported apart from training.

    The warm-up step is undone: parameters, buffers and the RNG are restored, so compile=true
    trains the same steps as compile=false.
    """
    compiled = torch.compile(model)
    device = data.device
    saved_state = {k: v.clone() for k, v in model.state_dict().items()}
    saved_rng = torch.get_rng_state()
    t0 = time.perf_counter()
    x, y = next(data.splits["train"].batches(batch_size, shuffle=False, device=device))
    model.train()
    with torch.autocast(device.type, dtype=data.amp_dtype or torch.float32, enabled=data.amp_dtype is not None):
        loss_fn(compiled(data.model_input(data.augment(x))), y).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    compile_s = time.perf_counter() - t0
    model.load_state_dict(saved_state)
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(saved_rng)
    return compiled, compile_s
