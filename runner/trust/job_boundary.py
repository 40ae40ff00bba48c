"""The one place every job's final config passes: Hydra's config loader, checked.

Every way a job comes to exist composes its config through Hydra's config loader before Hydra
creates anything for it: a single run and `--experimental-rerun` (`Hydra.compose_config`), and
each job of a grid, an Optuna trial, a fused group's member and a joblib, submitit or ray worker's
job (`load_sweep_config`, called by every launcher: in the process that then runs the job, or for
Ray in the sweep's process, which sends the checked config to the worker). So the
loader is where runner/trust/targets.py's check runs, on the job's final config however it was made:
typed overrides, config files, a search space's suggestion, a rerun folder's saved overrides.

* A command's own config (`compose_config`) that fails the check raises: nothing exists yet.
  runner/trust/preflight.py normally refuses it first, in one line; this is the backstop.
* A sweep job that fails it (say a trial whose suggestion, through an interpolation, points
  `hydra.output_subdir` elsewhere) is not run: its Hydra settings are replaced by the sweep's
  own, already checked, so Hydra creates only the job's folder inside the sweep dir, and the
  job records itself `refused` there with the reason (runner/__main__.py). The sweep goes on.

Hydra offers no hook between composing a job's config and creating its folder, so this adapter
subclasses Hydra's loader and makes `Hydra.create_main_hydra2` build it: the only use of Hydra's
private API for this rule. The loader travels with the launcher to a worker process and is the
same class there.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from common.errors import ConfigError
from runner import hydra_adapter
from runner.hydra_adapter import ConfigLoaderImpl
from runner.trust.allowed import COMMAND_LINE_ONLY, COMMAND_LINE_ONLY_NODES
from runner.trust.targets import check_config_trust, resolved_or_written

REFUSED_KEY = "_refused_"  # set on a refused sweep job's config: the reason, for the job to record
# Settings a refused sweep job takes from its sweep instead: everything Hydra acts on before the job runs.
SWEEP_SETTINGS = ("job_logging", "hydra_logging", "output_subdir", "sweep.dir", "sweep.subdir", "job.name",
                  "job.env_set")


class RefusedConfig(ConfigError, CompactHydraException):
    """A command's own config refused at the boundary: one line, through the entry point or Hydra alike."""


_composing = threading.local()  # launchers may load several jobs' configs at once, from threads


class CheckedConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader, with runner/trust/targets.py's check on every config it hands out."""

    def _load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        cfg = super()._load_configuration(*args, **kwargs)
        if not getattr(_composing, "sweep_job", False):  # a sweep job is checked in load_sweep_config
            try:
                check_config_trust(cfg)
            except ConfigError as e:
                raise RefusedConfig(str(e)) from None
        return cfg

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        _composing.sweep_job = True
        try:
            cfg = super().load_sweep_config(master_config, sweep_overrides)
        finally:
            _composing.sweep_job = False
        try:
            check_config_trust(cfg)
            _check_same_sweep_dir(cfg, master_config)
        except ConfigError as e:
            return _refused(cfg, master_config, str(e))
        return cfg


def _check_same_sweep_dir(cfg: DictConfig, master: DictConfig) -> None:
    """A job's folder is made under its own config's sweep dir: that must be the sweep's. And what only
    the command line may choose (runner/trust/targets.py COMMAND_LINE_ONLY) was checked for the sweep: a job keeps it."""
    for key in ("hydra.sweep.dir", *COMMAND_LINE_ONLY, *COMMAND_LINE_ONLY_NODES):
        try:
            job_value, sweep_value = OmegaConf.select(cfg, key), OmegaConf.select(master, key)
        except Exception:  # not resolvable here: the sweep and its jobs fail alike, in Hydra's words
            continue
        if job_value != sweep_value:
            raise ConfigError(f"{key}={job_value} is not allowed in one job of a sweep: it stays the sweep's "
                              f"({sweep_value}); set it for the whole sweep on the command line")


def _refused(cfg: DictConfig, master: DictConfig, reason: str) -> DictConfig:
    """The job's config with its sweep's Hydra settings and the reason it may not run."""
    with read_write(cfg), open_dict(cfg):
        for key in SWEEP_SETTINGS:
            OmegaConf.update(cfg.hydra, key, _sweep_setting(master, key), merge=False)
        cfg[REFUSED_KEY] = reason.replace("${", "\\${")  # the reason quotes configs: keep it text
    try:
        check_config_trust(OmegaConf.masked_copy(cfg, ["hydra"]))  # the sweep's own settings, checked already
    except ConfigError as e:
        raise RefusedConfig(f"{reason}; and the sweep's own settings can't stand in for it: {e}") from None
    return cfg


def _sweep_setting(master: DictConfig, key: str) -> Any:
    """The sweep's value as resolved for the sweep itself, or as written where only a job can resolve it."""
    value = resolved_or_written(master.hydra, key)
    if not isinstance(value, DictConfig):
        return copy.deepcopy(value)
    try:
        return OmegaConf.to_container(value, resolve=True)
    except Exception:  # a logging file name in ${hydra.runtime.output_dir}: the job's own, as written
        return OmegaConf.to_container(value, resolve=False)


def refusal(task_cfg: Any) -> str | None:
    """Why this job may not run (see `_refused`), or None for a job that may."""
    return task_cfg.get(REFUSED_KEY) if isinstance(task_cfg, DictConfig) else None


def install() -> None:
    """Make Hydra build its config loader as a CheckedConfigLoader (call before `@hydra.main` runs)."""
    hydra_adapter.install_config_loader(CheckedConfigLoader)
