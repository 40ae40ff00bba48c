"""`resume=`: what the command line may change about the run in the checkpoint, and what it may not.

A resumed run continues the checkpoint's training: the same model, optimizer, scheduler,
batch size, augmentation, data set, loss options and seed (their state comes from the
checkpoint, so a new value would be silently ignored, or silently mix two recipes). Those are
refused with one line naming every key that differs. What may change:
  epochs   train on to a new total (not fewer than the checkpoint has done); recorded as given,
           but a scheduler whose shape depends on it (cosine's T_max, onecycle) then differs and
           is refused, since its state from the checkpoint would ignore the new length;
  lr       takes effect, set on the optimizer after its state is loaded, when the learning rate
           is constant (scheduler=none); refused under any other scheduler, which owns the lr;
  and the keys that change only speed or bookkeeping: device, compute.*, num_workers,
  progress, tensorboard, resume, rerun.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from runner.collect import flatten

MAY_CHANGE = {"epochs", "lr", "optimizer.lr", "device", "num_workers", "progress", "tensorboard", "resume", "rerun"}
MAY_CHANGE_GROUPS = {"compute", "logger"}
_ABSENT = "<absent>"


def differences(now: dict[str, Any], then: dict[str, Any], ignore: set[str], ignore_groups: set[str]) -> list[str]:
    """`key (then -> now)` for every flattened key whose value differs, outside `ignore`."""
    flat_now, flat_then = flatten(now), flatten(then)
    out = []
    for key in sorted(set(flat_now) | set(flat_then)):
        if key in ignore or key.split(".")[0] in ignore_groups:
            continue
        old, new = flat_then.get(key, _ABSENT), flat_now.get(key, _ABSENT)
        if old != new:
            out.append(f"{key} ({old} -> {new})")
    return out


def _constant_lr(scheduler: dict[str, Any]) -> bool:
    return str(scheduler.get("_target_", "")).endswith(".ConstantLR") and scheduler.get("factor") == 1.0


def check_resume(cfg: DictConfig, state: dict[str, Any]) -> None:
    """Raise ConfigError if the command line asks the checkpoint's run to become another run."""
    now, then = OmegaConf.to_container(cfg, resolve=True), state["config"]
    changed = differences(now, then, MAY_CHANGE, MAY_CHANGE_GROUPS)
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ConfigError(f"resume={cfg.resume} was trained with other settings: {', '.join(changed[:3])}{more}; "
                          f"drop those overrides to resume, or start a new run without resume=")
    if cfg.epochs < state["epoch"]:
        raise ConfigError(f"epochs={cfg.epochs} is fewer than the {state['epoch']} epochs resume={cfg.resume} "
                          f"has done; use epochs={state['epoch']} or more")
    old_lr, new_lr = then["optimizer"].get("lr"), now["optimizer"].get("lr")
    if old_lr != new_lr and not _constant_lr(now["scheduler"]):
        scheduler = str(now["scheduler"].get("_target_")).rsplit(".", 1)[-1]
        raise ConfigError(f"lr={new_lr} differs from the {old_lr} resume={cfg.resume} was trained with, and the "
                          f"scheduler ({scheduler}) sets the lr from its saved state; resume with lr={old_lr}")


def apply_new_lr(cfg: DictConfig, state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """After loading the optimizer's and scheduler's state: put a changed constant lr into effect."""
    old_lr, new_lr = state["config"]["optimizer"].get("lr"), cfg.optimizer.get("lr")
    if old_lr == new_lr or old_lr is None or new_lr is None:
        return
    for group in optimizer.param_groups:  # scaled, so groups with their own lr keep their ratio
        group["lr"] = group["lr"] * new_lr / old_lr
        if "initial_lr" in group:
            group["initial_lr"] = group["initial_lr"] * new_lr / old_lr
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * new_lr / old_lr for lr in scheduler.base_lrs]
