"""Every use of Hydra's or the Optuna plugin's private API: the one module that imports `hydra._internal`.

Hydra's plugin API is public (hydra.plugins.*, hydra.core.utils.run_job); what is not lives here,
so that a Hydra or plugin release that changes it breaks one small file (tests/test_imports.py
checks that no other module reaches in):

* the Optuna plugin's search-space parsing (`OptunaSweeperImpl._process_searchspace_config` and
  friends, `_impl.create_params_from_overrides`) and its trial overrides, which our sweeper
  reuses instead of re-parsing;
* the Ray plugin's job wrapper and Ray start-up (`_launcher_util`), which our Ray launcher reuses;
* what Hydra's own launchers (basic, joblib, submitit, the Ray plugin's) mean for a sweep, which
  they can't declare themselves: `traits_of` reads our launchers' `traits` and maps Hydra's by class;
* Hydra's own pieces the command-line check and the job boundary reuse so they read a command
  exactly as Hydra will: its argument parser, `@hydra.main`'s Hydra object, the basic sweeper's
  grid expansion, a rerun's stored overrides, the `_target_` resolver, and the config loader
  class the job boundary replaces with its checked one.

A launcher tells the sweeper and the job what they need through `LauncherTraits`, not by its name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from hydra._internal.config_loader_impl import ConfigLoaderImpl  # noqa: F401 (the job boundary's base class)
from omegaconf import DictConfig


def _one(launcher_cfg: DictConfig) -> int:
    return 1


def _joblib_workers(launcher_cfg: DictConfig) -> int:
    """joblib's n_jobs: -1 means all cores, -2 all but one, ..."""
    n_jobs = int(launcher_cfg.get("n_jobs") or 1)
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


@dataclass(frozen=True)
class LauncherTraits:
    """What a launcher means for a sweep; a launcher class declares it as its `traits` attribute.

    in_process: it runs a call's jobs in the sweep's own process, one after another, so the Optuna
        sweeper launches one trial at a time (else one trial per call from hydra.sweeper.n_jobs threads).
    fuses: it trains the trials of one launcher call together, so the sweeper launches n_jobs trials as one call.
    shares_machine: its jobs run as processes beside one another on this machine, sharing its GPUs
        (runner/run/gpu_lease.py leases them one each).
    trials_at_once: from the launcher's config, how many of its jobs run at once on the machine
        a job runs on (compute.threads=auto divides the cores among them); called inside the job.
    """

    in_process: bool = False
    fuses: bool = False
    shares_machine: bool = False
    trials_at_once: Callable[[DictConfig], int] = field(default=_one)


# Launchers that don't declare traits (a cluster's launchers: submitit):
# their jobs run elsewhere, one per call.
ELSEWHERE = LauncherTraits()
_HYDRA_LAUNCHERS = {
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher": LauncherTraits(in_process=True),
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher":
        LauncherTraits(shares_machine=True, trials_at_once=_joblib_workers),
}


def traits_of(launcher: Any) -> LauncherTraits:
    """The traits of a launcher: an instance, or its config node (`hydra.launcher`, whose `_target_` Hydra
    has already checked against runner/trust/targets.py before it ran anything)."""
    if isinstance(launcher, DictConfig):
        target = str(launcher.get("_target_", ""))
        if target in _HYDRA_LAUNCHERS:
            return _HYDRA_LAUNCHERS[target]
        import importlib

        module, _, name = target.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except Exception:  # not installed here (a job of a cluster launcher): it runs one job at a time here
            return ELSEWHERE
    else:
        cls = type(launcher)
    known = _HYDRA_LAUNCHERS.get(f"{cls.__module__}.{cls.__qualname__}")
    return known or getattr(cls, "traits", ELSEWHERE)


# ---------------------------------------------------------------------- the Optuna plugin's internals
def search_space(impl: Any, arguments: list[str]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(space, fixed params, fixed overrides) as the plugin reads them: hydra.sweeper.params, then the
    command line's sweeps; `impl` is the plugin's OptunaSweeperImpl."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    impl._process_searchspace_config()
    space, fixed_params, fixed_overrides = create_params_from_overrides(
        impl._parse_sweeper_params_config() + list(arguments))
    for name in fixed_params:
        space.pop(name, None)
    return space, fixed_params, fixed_overrides


def directions(impl: Any) -> list[str]:
    """hydra.sweeper.direction as a list, as the plugin reads it."""
    return impl._get_directions()


def grid_choices(impl: Any, distribution: Any) -> list[Any]:
    """A distribution's values for Optuna's GridSampler, as the plugin lists them."""
    return impl._to_grid_sampler_choices(distribution)


def trial_overrides(impl: Any, trial: Any, fixed_params: dict[str, Any], fixed_overrides: list[str],
                    space: dict[str, Any]) -> list[str]:
    """A trial's job overrides (its suggested parameters, the fixed ones), as the plugin writes them."""
    return list(impl._configure_trials([trial], space, fixed_params, fixed_overrides)[0])


# ---------------------------------------------------------------------- Hydra's internals
def locate(name: str) -> Any:
    """The object a dotted name names, found as Hydra's instantiate finds a `_target_`."""
    from hydra._internal._locate import _locate

    return _locate(name)


def args_parser() -> Any:
    """Hydra's own command-line parser (its flags, as `@hydra.main` reads them)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def rerun_overrides(run_dir: str) -> tuple[str | None, list[str]]:
    """(config name, overrides) that `--experimental-rerun DIR` applies, read from DIR/.hydra."""
    from hydra._internal.utils import _get_rerun_overrides

    return _get_rerun_overrides(run_dir)


def main_hydra(task_function: Callable, config_path: str | None, config_dir: str | None = None) -> Any:
    """The Hydra object `@hydra.main` creates for `task_function`: its config search path, with a
    `--config-dir` folder first."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (create_automatic_config_search_path,
                                       detect_calling_file_or_module_from_task_function, detect_task_name)
    from hydra.core.config_search_path import SearchPathQuery

    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, config_path)
    if config_dir is not None:
        search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(config_dir)}",
                            anchor=SearchPathQuery(provider="schema"))
    return Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                    config_search_path=search_path)


def grid_jobs(parsed_overrides: list[Any]) -> list[list[str]]:
    """The basic sweeper's jobs for these parsed overrides: each job's override list, as it expands them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(parsed_overrides, None)[0]


def install_config_loader(loader_class: type) -> None:
    """Make Hydra build its config loader from `loader_class` (a ConfigLoaderImpl subclass)."""
    import hydra._internal.hydra as hydra_internal

    hydra_internal.ConfigLoaderImpl = loader_class


# ---------------------------------------------------------------------- the Ray plugin's internals
def ray_plugin_functions() -> tuple[Callable, Callable]:
    """(launch_job_on_ray, start_ray): the Ray plugin's own job wrapper and `ray.init` call."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray

    return launch_job_on_ray, start_ray
