"""`python -m runner.eval checkpoint=PATH [split=val|test] [device=auto] [dataset.root=DIR]`

Loads a checkpoint (its resolved config travels inside it), rebuilds the model and data set
from that config, and prints top-1, top-5 and how long evaluation took, like the course's
eval script. `split=test` reports the held-out test split where the data set has one; it is
never used for selecting a model. Other `dataset.KEY=VALUE` arguments override the stored data
set config (e.g. a new root on another machine).

A checkpoint may come from elsewhere: it is checked first (runner/record/checkpoint.py: its parts'
types, plain values in its config, a model whose shapes are its weights'), only the model and
data set classes of runner/trust/targets.py are built from its config, and a config naming anything else
is refused before anything runs. What only the command line may ask for is not taken from the
file: its `hydra` settings, a data set download, a pretrained model's download or weights file.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import yaml
from hydra.utils import execution_whitelist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from common.errors import ConfigError, entry_point
from data.splits import Split
from runner.record.checkpoint import check_model_shapes, for_weights, load_checkpoint, load_model_state
from runner.run.build import build
from runner.run.compute import pick_device
from runner.run.epoch import evaluate
from runner.run.setup import RunData, open_data
from runner.trust.allowed import EVAL_TARGETS, RUN_TARGETS
from runner.trust.targets import check_run_targets, run_whitelist

USAGE = "usage: python -m runner.eval checkpoint=PATH [split=val|test] [device=auto] [dataset.root=DIR]"


def parse_args(argv: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {"checkpoint": None, "split": "val", "device": "auto", "dataset": {}, "help": False}
    if any(arg in ("-h", "--help") for arg in argv):
        return {**options, "help": True}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"argument {arg!r} is not KEY=VALUE; {USAGE}")
        if key.startswith("dataset."):
            options["dataset"][key[len("dataset."):]] = yaml.safe_load(value)  # "32" -> 32, "true" -> True
        elif key in options and key not in ("dataset", "help"):
            options[key] = value
        else:
            raise ConfigError(f"unknown key {key!r}; {USAGE}")
    if not options["checkpoint"]:
        raise ConfigError(f"checkpoint is missing; {USAGE}")
    return options


@dataclass
class Restored(RunData):
    """A checkpoint brought back to life: a run's data (runner/run/setup.py), its config, state and model."""

    state: dict[str, Any]
    cfg: DictConfig
    model: nn.Module


def restore(checkpoint: str, device: str = "auto", dataset_overrides: dict[str, Any] | None = None) -> Restored:
    """Rebuild the model and data set a checkpoint was trained with, from the config inside it."""
    state = load_checkpoint(checkpoint)  # checked: types, plain values, sizes (runner/record/checkpoint.py)
    cfg = OmegaConf.create({k: v for k, v in state["config"].items() if k != "hydra"})
    if "download" in cfg.dataset:
        cfg.dataset.download = False  # the file doesn't get to write a download anywhere; dataset.download=true does
    if "cuda_graph" in cfg.compute:
        cfg.compute.cuda_graph = "auto"  # a training-step option: evaluation never captures
    if dataset_overrides:
        cfg.dataset = OmegaConf.merge(cfg.dataset, dataset_overrides)
    whitelist = trusted_eval_targets(cfg)
    with execution_whitelist(whitelist, reset=True):
        check_model_shapes(cfg.model, cfg.dataset, state)  # on the meta device: nothing allocated for a wrong config
        data = open_data(cfg, pick_device(device), training=False)  # the run's own set-up, without augmentation
        model = build(for_weights(cfg.model), "model")
    load_model_state(model, state)
    return Restored(**vars(data), state=state, cfg=cfg, model=model.to(data.device))


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


def trusted_eval_targets(cfg: Any) -> tuple[str, ...]:
    """A config read out of a file builds only a model and a data set: refuse any other class.

    The whole stored config must hold only classes a run may name (runner/trust/targets.py), and the
    model and data set nodes only model and data set classes; Hydra is then allowed exactly those.
    """
    source = "the checkpoint's config names it, and it is "
    check_run_targets(cfg, RUN_TARGETS, source)
    return run_whitelist(OmegaConf.create({k: cfg.get(k) for k in EVAL_TARGETS}), EVAL_TARGETS, source)


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        if options["help"]:
            print(USAGE)
            print(__doc__.split("\n\n", 1)[1].strip())
            return 0
        result = run_eval(options["checkpoint"], options["split"], options["device"], options["dataset"])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"checkpoint: {options['checkpoint']} (epoch {result['epoch']})")
    print(f"{result['split']}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  "
          f"on {result['images']} images in {result['eval_s']:.2f}s")
    return 0


if __name__ == "__main__":
    with entry_point():  # anything unexpected: one line, the traceback in a file
        sys.exit(main())
