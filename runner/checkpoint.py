"""Checkpoints: state dicts, numbers and the plain resolved config, nothing pickled.

So `torch.load(path, weights_only=True)` (PyTorch's default since 2.6) reads every file we write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import ConfigError
from common.io import atomic_torch_save

CHECKPOINT_KEYS = {"epoch", "model", "optimizer", "scheduler", "config", "history", "rng"}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, key: str = "checkpoint") -> dict[str, Any]:
    """Read and sanity-check a checkpoint, or raise ConfigError naming `key` and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path} does not exist; pass the path of a checkpoint.pth.tar or model_best.pth.tar")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"{key}={path} is not a readable checkpoint ({type(e).__name__}); "
                          f"pass a checkpoint.pth.tar written by the runner") from None
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
        raise ConfigError(f"{key}={path} is not a runner checkpoint (missing "
                          f"{sorted(CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else CHECKPOINT_KEYS)}); "
                          f"pass a checkpoint.pth.tar written by the runner")
    return state


def load_model_state(model: nn.Module, state: dict[str, Any], key: str = "checkpoint") -> None:
    """Load weights, refusing a checkpoint of another architecture with a one-line reason."""
    saved_target = state["config"].get("model", {}).get("_target_")
    ours = model.state_dict()
    theirs = state["model"]
    mismatch = sorted(set(ours) ^ set(theirs)) or [
        k for k in ours if tuple(ours[k].shape) != tuple(theirs[k].shape)]
    if mismatch:
        raise ConfigError(
            f"{key} belongs to another model ({saved_target}, differs at {mismatch[0]!r}); "
            f"use the model, data set and class count it was trained with")
    model.load_state_dict(theirs)
