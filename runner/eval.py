"""`python -m runner.eval checkpoint=PATH [split=val|test] [device=auto] [dataset.root=DIR]`

Loads a checkpoint (its resolved config travels inside it), rebuilds the model and data set
from that config, and prints top-1, top-5 and how long evaluation took, like the course's
eval script. `split=test` reports the held-out test split where the data set has one; it is
never used for selecting a model. Other `dataset.KEY=VALUE` arguments override the stored data
set config (e.g. a new root on another machine).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

import yaml
from hydra.utils import execution_whitelist, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from data.augment import Normalize
from data.base import ImageDataset
from data.splits import Split, open_splits
from runner.checkpoint import load_checkpoint, load_model_state
from runner.config import TRUSTED_TARGETS
from common.errors import ConfigError
from runner.train import configure_compute, evaluate, pick_device

USAGE = "usage: python -m runner.eval checkpoint=PATH [split=val|test] [device=auto] [dataset.root=DIR]"


def parse_args(argv: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {"checkpoint": None, "split": "val", "device": "auto", "dataset": {}}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"argument {arg!r} is not KEY=VALUE; {USAGE}")
        if key.startswith("dataset."):
            options["dataset"][key[len("dataset."):]] = yaml.safe_load(value)  # "32" -> 32, "true" -> True
        elif key in options and key != "dataset":
            options[key] = value
        else:
            raise ConfigError(f"unknown key {key!r}; {USAGE}")
    if not options["checkpoint"]:
        raise ConfigError(f"checkpoint is missing; {USAGE}")
    return options


@dataclass
class Restored:
    """A checkpoint brought back to life: its config, data set, splits and model with its weights."""

    state: dict[str, Any]
    cfg: DictConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    dataset: ImageDataset
    splits: dict[str, Split]
    model: nn.Module
    normalize: nn.Module


def restore(checkpoint: str, device: str = "auto", dataset_overrides: dict[str, Any] | None = None) -> Restored:
    """Rebuild the model and data set a checkpoint was trained with, from the config inside it."""
    state = load_checkpoint(checkpoint)
    cfg = OmegaConf.create(state["config"])
    if dataset_overrides:
        cfg.dataset = OmegaConf.merge(cfg.dataset, dataset_overrides)
    torch_device = pick_device(device)
    amp_dtype = configure_compute(cfg.compute, torch_device)
    with execution_whitelist(TRUSTED_TARGETS):
        dataset = instantiate(cfg.dataset)
        splits = open_splits(dataset, str(cfg.compute.data_path), torch_device, cfg.num_workers)
        model = instantiate(cfg.model)
    load_model_state(model, state)
    model = model.to(torch_device)
    normalize = Normalize(dataset.mean, dataset.std).to(torch_device)
    return Restored(state, cfg, torch_device, amp_dtype, dataset, splits, model, normalize)


def require_split(splits: dict[str, Split], split: str) -> Split:
    if split not in splits:
        raise ConfigError(f"split={split} does not exist for this data set (it has {', '.join(splits)}); "
                          f"use split=val")
    return splits[split]


def run_eval(checkpoint: str, split: str = "val", device: str = "auto",
             dataset_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on one split; returns top1, top5, loss, images and eval_s."""
    run = restore(checkpoint, device, dataset_overrides)
    data = require_split(run.splits, split)
    started = time.perf_counter()
    metrics = evaluate(run.model, data, run.normalize, run.amp_dtype)
    eval_s = time.perf_counter() - started
    return {"split": split, "top1": metrics["val_acc"], "top5": metrics["val_top5"], "loss": metrics["val_loss"],
            "images": len(data.labels), "eval_s": eval_s, "epoch": run.state["epoch"]}


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        result = run_eval(options["checkpoint"], options["split"], options["device"], options["dataset"])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"checkpoint: {options['checkpoint']} (epoch {result['epoch']})")
    print(f"{result['split']}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  "
          f"on {result['images']} images in {result['eval_s']:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
