"""Two rules of a resumable study, apart from the sweeper's loop: what a later run into the same
study must repeat (its fixed overrides), and the command that resumes it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Overrides that change no result, so they may differ between the runs of one study.
RESULT_NEUTRAL = ("progress", "tensorboard", "logger", "num_workers", "device", "compute.")


def check_fixed_overrides(study: Any, fixed_params: dict, fixed_overrides: list, storage: Any) -> None:
    """Refuse to add trials run with other fixed settings to a study: one best of mixed trials misleads.

    The first run stores its fixed overrides (e.g. epochs=2) in the study; a later run into the
    same study must repeat them. Settings that change no result (RESULT_NEUTRAL) may differ.
    """
    now = sorted(f"{k}={v}" for k, v in fixed_params.items()) + sorted(fixed_overrides)
    before = study.user_attrs.get("fixed_overrides")
    if before is None:
        study.set_user_attr("fixed_overrides", now)
        return
    differs = differing_overrides(list(before), now)
    if differs:
        from runner.optuna_report import display_url

        print(f"error: Optuna study '{study.study_name}' ({display_url(storage)}) was started with "
              f"{differs}: its trials would not be comparable; repeat its overrides to extend it, or start a "
              f"separate study with hydra.sweeper.study_name=<new name>", file=sys.stderr)
        sys.exit(2)


def resume_command(config: DictConfig) -> str:
    """This command line again, with the sweep dir pinned when it was a `${now:...}` default."""
    argv = list(sys.argv[1:])
    sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    if "${now:" in str(sweep.get("dir")) and not any(a.startswith("hydra.sweep.dir=") for a in argv):
        argv.append(f"hydra.sweep.dir={config.hydra.sweep.dir}")
    return shlex.join([Path(sys.executable).name, "-m", "runner", *argv])


def differing_overrides(before: list[str], now: list[str]) -> str:
    """'epochs=2 and this run has epochs as in the config' for the first fixed override that differs; '' if none."""
    def parse(items: list[str]) -> dict[str, str]:
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in items)
        return {k: v for k, v in pairs if not k.lstrip("+~").startswith(RESULT_NEUTRAL)}

    old, new = parse(before), parse(now)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            was = f"{key}={old[key]}" if key in old else f"{key} as in the config"
            is_ = f"{key}={new[key]}" if key in new else f"{key} as in the config"
            return f"{was} and this run has {is_}"
    return ""
