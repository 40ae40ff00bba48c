"""The typed schema of a run's top-level keys, and the start-up checks Hydra's types can't express.

Hydra validates types and unknown keys against `RunConfig` while composing (``batch_size=abc``
or ``lrr=0.1`` fail there, before anything runs); `check_config` then rejects values that have
the right type but make no sense, each with one line naming the key, the value and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from common.errors import ConfigError
from runner.objective import OBJECTIVES


@dataclass
class RunConfig:
    batch_size: int = 32
    lr: float = 0.001
    epochs: int = 10
    seed: Optional[int] = 0
    device: str = "auto"
    resume: Optional[str] = None
    num_workers: int = 0
    tensorboard: bool = True
    progress: str = "auto"
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None
    objective: str = "val_acc"
    rerun: bool = False
    compute: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    augmentation: Any = MISSING
    dataset: Any = MISSING
    adversary: Any = None
    logger: Any = None  # conf/logger/: trackers (runner/trackers.py)


ConfigStore.instance().store(name="run_schema", node=RunConfig)


def __getattr__(name: str) -> tuple[str, ...]:
    """`TRUSTED_TARGETS`: Hydra's execution whitelist for a run's groups, the exact classes of
    runner/trust.py RUN_TARGETS (built on first use: it imports them to add canonical names)."""
    if name == "TRUSTED_TARGETS":
        from runner.trust import RUN_TARGETS, flat, hydra_whitelist

        return hydra_whitelist(flat(RUN_TARGETS))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SWITCH_VALUES = ("auto", "true", "false")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def switch(value: object) -> str:
    """An auto|true|false setting as one lower-case word: YAML reads `true` as a bool, and a
    command-line override may arrive as the string "True"."""
    return str(value).lower()


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that can't work."""
    checks = [
        (cfg.lr > 0, "lr", cfg.lr, "use a positive learning rate, e.g. lr=0.01"),
        (cfg.batch_size >= 1, "batch_size", cfg.batch_size, "use batch_size=1 or more"),
        (cfg.epochs >= 1, "epochs", cfg.epochs, "use epochs=1 or more"),
        (cfg.num_workers >= 0, "num_workers", cfg.num_workers, "use num_workers=0 or more"),
        (bool(DEVICE_PATTERN.match(str(cfg.device))), "device", cfg.device, "use device=auto, cpu or cuda"),
        (switch(cfg.progress) in SWITCH_VALUES, "progress", cfg.progress, "use progress=auto, true or false"),
        (switch(cfg.compute.amp) in SWITCH_VALUES, "compute.amp", cfg.compute.amp, "use auto, true or false"),
        (switch(cfg.compute.data_on_device) in SWITCH_VALUES, "compute.data_on_device", cfg.compute.data_on_device,
         "use auto, true or false"),
        (switch(cfg.compute.get("cuda_graph", "auto")) in SWITCH_VALUES, "compute.cuda_graph",
         cfg.compute.get("cuda_graph"), "use auto, true or false"),
        (0.0 <= cfg.label_smoothing < 1.0, "label_smoothing", cfg.label_smoothing, "use a value in [0, 1), e.g. 0.1"),
        (cfg.grad_clip is None or cfg.grad_clip > 0, "grad_clip", cfg.grad_clip, "use a positive norm or grad_clip=null"),
        (cfg.seed is None or cfg.seed >= 0, "seed", cfg.seed, "use a seed of 0 or more, or seed=null"),
    ]
    checks.append((cfg.get("objective", "val_acc") in OBJECTIVES, "objective", cfg.get("objective"),
                   "use objective=val_acc or val_robust_acc"))
    checks.append((cfg.get("objective", "val_acc") != "val_robust_acc" or (cfg.get("adversary") or {}).get("_target_"),
                   "objective", "val_robust_acc", "it is measured only with an adversary: add adversary=pgd or fgsm"))
    for ok, key, value, fix in checks:
        if not ok:
            raise ConfigError(f"{key}={value} is invalid: {fix}")
    for group in ("model", "optimizer", "scheduler", "augmentation", "dataset"):
        if "_target_" not in cfg[group]:
            raise ConfigError(f"{group} has no _target_; pick a file from conf/{group}/, e.g. {group}=<name>")
