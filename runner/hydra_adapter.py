"""Every call into Hydra's or the Optuna plugin's private API that the sweeper and launchers make.

Hydra's plugin API is public (hydra.plugins.*, hydra.core.utils.run_job); what is not lives here,
so that a Hydra or plugin release that changes it breaks one small file:

* the Optuna plugin's search-space parsing (`OptunaSweeperImpl._process_searchspace_config` and
  friends, `_impl.create_params_from_overrides`), which our sweeper reuses instead of re-parsing;
* what Hydra's own launchers (basic, joblib, submitit, the Ray plugin's) mean for a sweep, which
  they can't declare themselves: `traits_of` reads our launchers' `traits` and maps Hydra's by class.

A launcher tells the sweeper and the job what they need through `LauncherTraits`, not by its name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

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
        (runner/gpu_lease.py leases them one each).
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
    has already checked against runner/trust.py before it ran anything)."""
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
