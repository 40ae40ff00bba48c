"""`hydra/launcher=runner_ray`: a sweep's jobs as Ray tasks, on a running Ray cluster or on a Ray
instance the sweep starts on this machine (docs/ray.md).

hydra-ray-launcher's launcher, on the plugin's own functions (`hydra/launcher=runner_ray`, stored by
hydra_plugins/sweep_runner_ray/ beside the plugin's own `ray`), with the differences a sweep of this project needs:

* Ray is joined (or started) once per sweep, under a lock: the Optuna sweeper launches trials
  from n_jobs threads at once, and two `ray.init` calls at the same time fail.
* A job's folder is given to it as an absolute path: a Ray worker runs in the folder its node
  was started from, so a relative sweep dir (the default outputs/...) would put the run folder,
  and the Optuna storage URL that names it, under that folder instead of the sweep dir the
  collector reads. The nodes must see the sweep dir at the same path (one machine, or a shared
  file system).
* A job whose Ray task ends without a result (its worker or node died and Ray's retries ran out,
  its runtime_env could not be set up) is recorded `failed` with Ray's reason
  (runner/sweep/job_records.py) and returns no value, as a failed job does; the sweep goes on.
* Ctrl-C or SIGTERM to the sweep cancels its running jobs' tasks (Ray raises KeyboardInterrupt in
  them) and waits for them to record `interrupted`; ray.init's own SIGTERM handler, a plain exit,
  is replaced by the sweep's again.
* A job whose run trains on a GPU (its own `device` is cuda or cuda:N) asks Ray for one
  (`num_gpus: 1`), so that Ray runs it on a node with a GPU free and lets it see that GPU only;
  `hydra.launcher.ray.remote.num_gpus=...` sets the request for every job instead (0.5: two
  trials share a GPU).

Each job's config is composed here, in the sweep's process, by the checked loader
(runner/trust/job_boundary.py): a refused job is sent to its worker marked so and records itself
`refused` there. What `hydra.launcher.ray.init` and `.remote` may hold, and from where:
runner/trust/targets.py COMMAND_LINE_ONLY_NODES.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from common.errors import ConfigError
from runner.hydra_adapter import LauncherTraits

log = logging.getLogger("runner")
_joining = threading.Lock()
TARGET = "runner.sweep.ray_launcher.RayLauncher"
INTERRUPT_GRACE_S = 30  # how long an interrupted sweep waits for its running jobs to record that they were


def check_installed(launcher: DictConfig) -> None:
    """hydra/launcher=runner_ray without the plugin: one line naming the extra (runner/trust/preflight.py calls this)."""
    if launcher.get("_target_") == TARGET and importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        raise ConfigError("hydra/launcher=runner_ray needs hydra-ray-launcher and Ray: pip install -e \".[ray]\"")


def wants_gpu(device: Any) -> bool:
    """Whether a run with this `device` trains on a CUDA GPU (auto decides on the worker: no request)."""
    return str(device).startswith("cuda")


def job_resources(remote: DictConfig, job_cfg: DictConfig) -> DictConfig:
    """What one job asks Ray for: `hydra.launcher.ray.remote` as set, plus a GPU where the job trains on one."""
    options: dict[str, Any] = OmegaConf.to_container(remote, resolve=True) or {}  # type: ignore[assignment]
    if "num_gpus" not in options and wants_gpu(job_cfg.get("device")):
        options["num_gpus"] = 1
    return OmegaConf.create(options)


def trials_per_node() -> int:
    """How many trials like this one fit this node at once, from the CPUs Ray gave it: compute.threads=auto
    then gives each trial its share of the node's cores (runner/run/compute.py cpu_threads)."""
    import ray

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:  # not inside a Ray task: as the basic launcher, one trial at a time
        return 1
    return max(1, cores // max(1, int(cpus)))


def _trials_per_node(launcher_cfg: DictConfig) -> int:
    return trials_per_node()


class RayLauncher(Launcher):
    traits = LauncherTraits(trials_at_once=_trials_per_node)  # jobs run as Ray tasks, one per call

    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        from runner.hydra_adapter import ray_plugin_functions

        launch_job_on_ray, start_ray = ray_plugin_functions()

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        whitelist = getattr(self.hydra_context, "execution_whitelist", None)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose,
                      **({"execution_whitelist": whitelist} if whitelist is not None else {}))
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        init = OmegaConf.create(OmegaConf.to_container(self.ray_cfg.init, resolve=True))
        with _joining:
            _start_ray_keeping_sigterm(start_ray, init)
        log.info("Ray: launching %d job(s) into %s", len(job_overrides), sweep_dir)
        runs, jobs = [], []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(job_cfg):
                job_cfg.hydra.job.id = f"job_id_for_{idx}"  # as hydra-ray-launcher names them
                job_cfg.hydra.job.num = idx
                job_cfg.hydra.sweep.dir = str(sweep_dir)
            runs.append(launch_job_on_ray(self.hydra_context, job_resources(self.ray_cfg.remote, job_cfg), job_cfg,
                                          self.task_function, Singleton.get_state()))
            jobs.append((list(overrides), job_cfg))
        returns = []
        try:
            for run, (overrides, job_cfg) in zip(runs, jobs):
                try:
                    returns.append(ray.get(run))
                except ray.exceptions.RayError as e:
                    returns.append(_lost(overrides, job_cfg, e))
        except BaseException:  # Ctrl-C or SIGTERM here: the jobs still running stop, and record it, first
            _interrupt(runs)
            raise
        return returns


def _interrupt(runs: list[Any]) -> None:
    """Cancel the jobs' tasks: Ray raises KeyboardInterrupt in each, as Ctrl-C would in a local run, so that
    its run records itself `interrupted` before the sweep ends (Ray would otherwise kill it with the sweep)."""
    import ray

    for run in runs:
        try:
            ray.cancel(run)
        except Exception:  # already done, or Ray itself is going down
            pass
    try:
        ray.wait(runs, num_returns=len(runs), timeout=INTERRUPT_GRACE_S)
    except Exception:
        pass


def _start_ray_keeping_sigterm(start_ray: Any, init: DictConfig) -> None:
    """ray.init replaces the main thread's SIGTERM handler with a plain exit: put back the sweep's own
    (runner/run/interrupts.py), which reports the interruption and lets the Optuna sweeper re-queue its trials."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    start_ray(init)
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _lost(overrides: list[str], job_cfg: DictConfig, error: Exception) -> JobReturn:
    """A job whose Ray task gave no result: its job record says `failed` and why."""
    from runner.sweep.job_records import write_job_record
    from runner.record.run_folder import Status

    with open_dict(job_cfg):
        job_cfg.hydra.runtime.output_dir = str(Path(job_cfg.hydra.sweep.dir) / str(job_cfg.hydra.sweep.subdir))
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = f"its Ray task gave no result: {type(error).__name__}: {lines[0] if lines else ''}"
    log.error("job %s failed: %s", job_cfg.hydra.job.num, reason)
    write_job_record(job_cfg.hydra, Status.FAILED, reason)
    # As the task itself returns a job that failed (runner/__main__.py): no value, the record says why.
    return JobReturn(overrides=overrides, cfg=job_cfg, hydra_cfg=job_cfg, working_dir=job_cfg.hydra.runtime.output_dir,
                     task_name=job_cfg.hydra.job.name, status=JobStatus.COMPLETED, _return_value=None)
