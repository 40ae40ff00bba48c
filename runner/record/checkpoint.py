"""Checkpoints: state dicts, numbers and the plain resolved config, nothing pickled.

So `torch.load(path, weights_only=True)` (PyTorch's default since 2.6) reads every file we write.
A checkpoint given to `runner.eval`, `runner.analyze` or `resume=` may come from elsewhere: it is
data, checked here before anything is built from it. Its parts must have the types the runner
writes, its config must be plain values (no `${...}` interpolation: a stored config is resolved),
and the model its config describes must have the shapes of its weights: that model is first
built on PyTorch's `meta` device, which allocates nothing, so a class count or image size far
beyond the file's weights is refused instead of allocated.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from common.errors import ConfigError
from common.io import atomic_torch_save
from runner.record.run_folder import METRIC_COLUMNS

CHECKPOINT_KEYS = {"epoch", "model", "optimizer", "scheduler", "config", "history", "rng"}
# What a resumed run reads besides CHECKPOINT_KEYS (runner/record/trial_record.py writes them).
RESUME_KEYS = {"best_val_acc", "best_epoch"}
MAX_IMAGE_SIZE = 8192  # pixels a side: a data set decodes every image at this size
MAX_CHANNELS = 64
# compute.KEY -> the values a stored config may hold (runner/config/schema.py check_config reads the switches).
SWITCH = ("auto", "true", "false", True, False)
COMPUTE_VALUES: dict[str, tuple[Any, ...] | type] = {
    "amp": SWITCH, "data_on_device": SWITCH, "data_path": ("auto", "resident", "stream"),
    "channels_last": bool, "compile": bool, "cudnn_benchmark": bool}
COMPUTE_OPTIONAL = {"cuda_graph": SWITCH}  # newer than some checkpoints: absent reads as auto


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, key: str = "checkpoint") -> dict[str, Any]:
    """Read and sanity-check a checkpoint, or raise ConfigError naming `key` and the fix."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{key}={path} {what}; pass the path of a checkpoint.pth.tar or model_best.pth.tar")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"{key}={path} is not a readable checkpoint ({type(e).__name__}); "
                          f"pass a checkpoint.pth.tar written by the runner") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{key}={path} holds a {type(state).__name__}, not a runner checkpoint; "
                          f"pass a checkpoint.pth.tar written by the runner")
    if not CHECKPOINT_KEYS <= state.keys():
        raise ConfigError(f"{key}={path} is not a runner checkpoint (missing {sorted(CHECKPOINT_KEYS - set(state))}); "
                          f"pass a checkpoint.pth.tar written by the runner")
    if isinstance(state["config"], dict):  # the classes it names first: a crafted file is told so plainly
        from runner.config.moved import with_current_targets
        from runner.trust.allowed import RUN_TARGETS
        from runner.trust.targets import check_run_targets

        state["config"] = with_current_targets(state["config"])  # an older run's moved classes, as named now
        check_run_targets(state["config"], RUN_TARGETS, "the checkpoint's config names it, and it is ")
    check_state(state, f"{key}={path}")
    return state


def _damaged(where: str, what: str) -> ConfigError:
    return ConfigError(f"{where} is damaged: {what}; pass a checkpoint.pth.tar written by the runner")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any, smallest: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= smallest


def check_state(state: dict[str, Any], where: str) -> None:
    """Types of the parts every reader uses: epoch, weights, and the config's shape."""
    if not _is_count(state["epoch"]):
        raise _damaged(where, f"its epoch is {state['epoch']!r}, not a whole number")
    weights = state["model"]
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise _damaged(where, "its model weights are not a mapping of names to tensors")
    check_stored_config(state["config"], where)


def check_resume_state(state: dict[str, Any], where: str) -> None:
    """What `resume=` reads besides the weights: history, best so far, RNG and the optimizer's state."""
    missing = sorted(RESUME_KEYS - set(state))
    if missing:
        raise _damaged(where, f"it has no {', '.join(missing)}")
    epoch, history = state["epoch"], state["history"]
    if not isinstance(history, list) or len(history) != epoch:
        raise _damaged(where, f"its history is not a list of its {epoch} epochs")
    for i, row in enumerate(history, 1):
        if not isinstance(row, dict) or row.get("epoch") != i or not all(
                _is_number(row.get(c)) for c in METRIC_COLUMNS):
            raise _damaged(where, f"its history row {i} is not epoch {i} with the numbers {', '.join(METRIC_COLUMNS)}")
    if not _is_number(state["best_val_acc"]) or not (
            state["best_epoch"] is None or (_is_count(state["best_epoch"], 1) and state["best_epoch"] <= epoch)):
        raise _damaged(where, "its best_val_acc or best_epoch is not a number within its epochs")
    rng = state["rng"]
    like = torch.get_rng_state()
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor) or \
            rng["torch"].dtype != like.dtype or rng["torch"].shape != like.shape:
        raise _damaged(where, "its RNG state is not the random generator's state")
    if rng.get("cuda") is not None and not (isinstance(rng["cuda"], torch.Tensor) and rng["cuda"].dtype == torch.uint8):
        raise _damaged(where, "its CUDA RNG state is not a byte tensor")
    optimizer = state["optimizer"]
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict) or \
            not isinstance(optimizer.get("param_groups"), list):
        raise _damaged(where, "its optimizer state is not an optimizer's state_dict")
    if not isinstance(state["scheduler"], dict):
        raise _damaged(where, "its scheduler state is not a scheduler's state_dict")


def check_stored_config(config: Any, where: str, groups: tuple[str, ...] = ("model", "dataset")) -> None:
    """The stored config's shape: mappings with a `_target_` for `groups`, plain values, sane sizes."""
    if not isinstance(config, dict):
        raise _damaged(where, f"its config is a {type(config).__name__}, not a mapping")
    for group in groups:
        node = config.get(group)
        if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
            raise _damaged(where, f"its config's {group} is {_kind(node)}, not a mapping with a _target_")
    _refuse_interpolations(config, where, "")
    dataset = config["dataset"]
    for name, largest in (("num_classes", None), ("image_size", MAX_IMAGE_SIZE), ("channels", MAX_CHANNELS)):
        value = dataset.get(name)
        if not _is_count(value, 1) or (largest is not None and value > largest):
            limit = f" up to {largest}" if largest else ""
            raise _damaged(where, f"its config's dataset.{name}={value!r} is not a whole number from 1{limit}")
    for name in ("in_channels", "image_size", "num_classes"):  # the rest of the model: its weights' shapes
        value = config["model"].get(name, 1)
        if not _is_count(value, 1) or (name == "image_size" and value > MAX_IMAGE_SIZE):
            raise _damaged(where, f"its config's model.{name}={value!r} is not a whole number from 1")
    if not _is_count(config.get("num_workers", 0)):
        raise _damaged(where, f"its config's num_workers={config.get('num_workers')!r} is not a whole number")
    if not all(isinstance(dataset.get(name), list) and dataset[name] and all(
            _is_number(v) and math.isfinite(v) for v in dataset[name]) for name in ("mean", "std")) or \
            min(dataset["std"]) <= 0:
        raise _damaged(where, "its config's dataset.mean and dataset.std are not lists of numbers (std above 0)")
    check_stored_compute(config.get("compute"), where)


def check_stored_compute(compute: Any, where: str) -> None:
    """Every compute switch present with one of its values (runner/run/compute.py reads them as they are)."""
    if not isinstance(compute, dict):
        raise _damaged(where, f"its config's compute is {_kind(compute)}, not a mapping")
    threads = compute.get("threads", "<absent>")
    if threads != "auto" and not (_is_count(threads, 1) and threads <= 4096):
        raise _damaged(where, f"its config's compute.threads={threads!r} is neither auto nor a thread count")
    for name, allowed in {**COMPUTE_VALUES, **COMPUTE_OPTIONAL}.items():
        if name not in compute and name in COMPUTE_OPTIONAL:
            continue
        value = compute.get(name, "<absent>")
        ok = isinstance(value, allowed) if isinstance(allowed, type) else (
            value in allowed and isinstance(value, (str, bool)))
        if not ok:
            raise _damaged(where, f"its config's compute.{name}={value!r} is not one of "
                                  f"{'true, false' if allowed is bool else ', '.join(map(str, allowed[:3]))}")


def _kind(value: Any) -> str:
    return "absent" if value is None else f"a {type(value).__name__}"


def _refuse_interpolations(node: Any, where: str, path: str) -> None:
    """A stored config is resolved; a `${...}` in it would be evaluated (environment, files, resolvers)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise _damaged(where, f"its config has a key {key!r} that is not a name")
            _refuse_interpolations(value, where, f"{path}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _refuse_interpolations(value, where, f"{path}{i}.")
    elif isinstance(node, str) and "${" in node:
        raise _damaged(where, f"its config's {path[:-1]} holds an interpolation ({node[:40]})")
    elif isinstance(node, float) and not math.isfinite(node):
        raise _damaged(where, f"its config's {path[:-1]} is {node}")
    elif not (node is None or isinstance(node, (str, int, float, bool))):
        raise _damaged(where, f"its config's {path[:-1]} is a {type(node).__name__}, not a plain value")


def for_weights(model_cfg: Any) -> Any:
    """The model config to build for a checkpoint's weights: no pretrained download or file (they're
    replaced), and plain logits out (the course's `return_shapes` tuple is for its own scripts)."""
    from omegaconf import OmegaConf

    node = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg)
                            else dict(model_cfg))
    for name, off in (("pretrained", False), ("weights_path", None), ("return_shapes", False)):
        if name in node:
            node[name] = off
    return node


def check_model_shapes(model_cfg: Any, dataset_cfg: Any, state: dict[str, Any], key: str = "checkpoint") -> None:
    """Build the config's model on the meta device (no memory), compare it with the weights, and
    check it takes the data set's images (models/shape_check.py)."""
    from models.shape_check import check_image_size
    from runner.run.build import build

    node = for_weights(model_cfg)
    try:
        with torch.device("meta"):
            shaped = build(node, "model")
    except ConfigError as e:
        raise ConfigError(f"{key}: its model config can't be built ({e})") from None
    except Exception as e:  # a constructor's own complaint about the stored values
        raise ConfigError(f"{key}: its model config can't be built ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                          f"pass a checkpoint.pth.tar written by the runner") from None
    _compare(shaped, state, key)
    check_image_size(node, dataset_cfg.channels, dataset_cfg.image_size)  # the images it will be given


def _compare(model: nn.Module, state: dict[str, Any], key: str) -> None:
    ours, theirs = model.state_dict(), state["model"]
    mismatch = sorted(set(ours) ^ set(theirs)) or [
        k for k in ours if tuple(ours[k].shape) != tuple(theirs[k].shape)]
    if mismatch:
        saved_target = state["config"].get("model", {}).get("_target_")
        raise ConfigError(
            f"{key} belongs to another model ({saved_target}, differs at {mismatch[0]!r}); "
            f"use the model, data set and class count it was trained with")


def load_model_state(model: nn.Module, state: dict[str, Any], key: str = "checkpoint") -> None:
    """Load weights, refusing a checkpoint of another architecture with a one-line reason."""
    _compare(model, state, key)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"{key}: its weights don't load ({str(e).strip().splitlines()[0]})") from None


def restore_on_cpu(cfg: DictConfig, state: dict[str, Any], where: str) -> None:
    """Load weights, optimizer and scheduler state into throwaway CPU objects: a damaged state fails here."""
    from runner.run.build import build
    from runner.run.build import build_scheduler

    check_model_shapes(cfg.model, cfg.dataset, state, where)
    dataset = build(cfg.dataset, "dataset")  # their constructors' checks (no data is read yet)
    if getattr(dataset, "root", None) is not None:
        dataset.require_root()  # a moved dataset.root that isn't there
    build(cfg.augmentation, "augmentation")
    model = build(for_weights(cfg.model), "model")
    load_model_state(model, state, where)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build(cfg.optimizer, "optimizer", params=params)
    scheduler, _ = build_scheduler(cfg.scheduler, optimizer, 1)
    fresh = scheduler.state_dict()
    if _layout(optimizer.state_dict()["param_groups"]) != _layout(state["optimizer"]["param_groups"]):
        raise ConfigError(f"{where} is damaged: its optimizer settings don't match the run's "
                          f"{type(optimizer).__name__}; pass a checkpoint.pth.tar written by the runner")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise ConfigError(f"{where} is damaged: its optimizer state doesn't load ({type(e).__name__}); "
                          f"pass a checkpoint.pth.tar written by the runner") from None
    for param, slots in optimizer.state.items():
        for name, value in slots.items():
            if not (isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and (
                    value.dim() == 0 or value.shape == param.shape))):
                raise ConfigError(f"{where} is damaged: its optimizer's {name} doesn't fit the model's weights; "
                                  f"pass a checkpoint.pth.tar written by the runner")
    if _layout(fresh) != _layout(state["scheduler"]):
        raise ConfigError(f"{where} is damaged: its scheduler state doesn't match the run's "
                          f"{type(scheduler).__name__}; pass a checkpoint.pth.tar written by the runner")


def _layout(value: Any) -> Any:
    """A state dict's structure: keys, list lengths and kinds of value (int and float alike)."""
    if isinstance(value, dict):
        return {k: _layout(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_layout(v) for v in value]
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.dim() == 0):
        return "number"  # a captured run's lr is a 0-d tensor
    return type(value).__name__
