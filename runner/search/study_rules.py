"""Rules of a resumable study, apart from the sweeper's loop: what a later run into the same
study must repeat (its fixed overrides), the command that resumes it, and the sweeper settings
refused before it starts."""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from runner.config.keys import result_neutral

# Pruner settings that may be negative (ThresholdPruner's bounds on the objective); the rest are counts.
SIGNED_PRUNER_KEYS = ("lower", "upper")
# Sweeper settings that are whole numbers: the least value, whether null is allowed, what they mean.
WHOLE_NUMBERS = {
    "n_jobs": (1, False, "trials run at once"),
    "n_trials": (0, False, "the study's total of trials"),
    "heartbeat_interval": (1, True, "seconds between a running trial's heartbeats; null: none"),
    "grace_period": (1, True, "seconds without a heartbeat before a trial is run again; null: two intervals"),
}


def check_fixed_overrides(study: Any, fixed_params: dict, fixed_overrides: list, storage: Any) -> None:
    """Refuse to add trials run with other fixed settings to a study: one best of mixed trials misleads.

    The first run stores its fixed overrides (e.g. epochs=2) in the study; a later run into the
    same study must repeat them. Speed and display settings (runner/config/keys.py) may differ.
    """
    now = sorted(f"{k}={v}" for k, v in fixed_params.items()) + sorted(fixed_overrides)
    before = study.user_attrs.get("fixed_overrides")
    if before is None:
        study.set_user_attr("fixed_overrides", now)
        return
    differs = differing_overrides(list(before), now)
    if differs:
        from runner.search.db import display_url

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
    script = Path(sys.argv[0])  # python -m runner, or another app's own script using our sweeper
    command = ["-m", "runner"] if script.name == "__main__.py" and script.parent.name == "runner" else [sys.argv[0]]
    return shlex.join([Path(sys.executable).name, *command, *argv])


def differing_overrides(before: list[str], now: list[str]) -> str:
    """'epochs=2 and this run has epochs as in the config' for the first fixed override that differs; '' if none."""
    def parse(items: list[str]) -> dict[str, str]:
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in items)
        return {k: v for k, v in pairs if not result_neutral(k)}

    old, new = parse(before), parse(now)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            was = f"{key}={old[key]}" if key in old else f"{key} as in the config"
            is_ = f"{key}={new[key]}" if key in new else f"{key} as in the config"
            return f"{was} and this run has {is_}"
    return ""


def check_options(pruner: DictConfig | None, **settings: Any) -> None:
    """ConfigError for a sweeper setting Optuna would refuse, or take silently, mid-sweep: the whole
    numbers of WHOLE_NUMBERS below their least value, max_failure_rate outside 0..1, a pruner
    setting its class refuses (built once here; each trial's job builds its own, runner/search/pruning.py)."""
    for key, value in settings.items():
        if key == "max_failure_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"hydra.sweeper.max_failure_rate={value} is invalid: use a fraction from 0 to 1 "
                                  "(1: failed trials never stop the search)")
            continue
        least, nullable, meaning = WHOLE_NUMBERS[key]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"hydra.sweeper.{key}={value} is invalid: use a whole number, {least} or more"
                              f"{', or null' if nullable else ''} ({meaning})")
    from hydra.errors import InstantiationException

    from runner.search.pruning import build_pruner, wants_pruning

    if not wants_pruning(pruner):
        return
    name = str(pruner.get("_target_")).split(".")[-1]
    for key, value in pruner.items():
        # Counts of trials, steps and resources: Hyperband only fails on a negative one in a trial's first report.
        if key not in SIGNED_PRUNER_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"hydra.sweeper.pruner.{key}={value} is negative: {name} takes 0 or more "
                              f"(1 or more for a resource or an interval)")
    try:
        build_pruner(pruner)
    except (InstantiationException, ValueError, TypeError) as e:
        cause = e.__cause__ or e
        reason = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
        raise ConfigError(f"hydra.sweeper.pruner ({name}) refuses its settings: {reason}; fix the "
                          "hydra.sweeper.pruner.* value it names") from None


def create_study(name: str | None, storage: Any, sampler: Any, pruner: Any, directions: list[str], url: Any) -> Any:
    """The study, new or resumed; ConfigError in one line when it was started with other directions
    (a study of one objective resumed with several, say)."""
    import optuna

    from runner.search.db import display_url

    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=directions, load_if_exists=True)
    started = [d.name.lower() for d in study.directions]  # Optuna resumes a study with its own directions
    if started != [str(d).lower() for d in directions]:
        shown = started[0] if len(started) == 1 else f"[{','.join(started)}]"
        raise ConfigError(f"Optuna study '{name}' ({display_url(url)}) was started with hydra.sweeper.direction="
                          f"{shown}: repeat its objective and direction to extend it, or start a separate study "
                          f"with hydra.sweeper.study_name=<new name>")
    return study


def is_grid(sampler: Any) -> bool:
    """Whether hydra.sweeper.sampler is Optuna's GridSampler (the plugin leaves it to be built with the grid)."""
    import optuna

    return (isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler)
