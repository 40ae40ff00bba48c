"""`hydra/launcher=fused`: a Hydra launcher that trains each fusible group of a sweep's jobs as one run.

It is the basic launcher (jobs in this process, in order) with one difference: the jobs that can
fuse (runner/fused/groups.py) are trained together by runner/fused/loop.py. Every job still goes
through Hydra's `run_job` (its folder, `.hydra/`, log file, job callbacks); a fused job's task
only claims its folder, and its value is filled into its JobReturn once its group has trained,
so the sweeper and the collector see the same returns, in job order, as with the basic launcher.

Only a task function marked `fusable_task` (runner/__main__.py's, which trains one run of this
project) is fused; any other app's task runs as plain jobs, one after another, as the basic launcher
runs them. Hydra finds the class through hydra_plugins/sweep_runner_fused/, which also stores its
config (`hydra/launcher=fused`). torch loads only when a sweep launches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from runner.hydra_adapter import LauncherTraits

log = logging.getLogger("runner")


@dataclass
class FusedLauncherConf:
    _target_: str = "runner.fused.launcher.FusedLauncher"
    # auto: fuse on a GPU, and on a CPU only up to batch size CPU_FUSE_MAX_BATCH (bench/fused_step.py,
    # 8 LeNets, fused step against 8 single steps: with 2 threads 1.77x at batch 8, 0.92x at 32;
    # with 1 thread 1.26x at 8, 0.74x at 32; bench/fused.py end to end at batch 32: 0.99x), except that trials
    # differing only in epochs still share one trajectory (runner/fused/prefix.py); true: always;
    # false: never (the basic launcher's behaviour). A group not fused runs one trial after another.
    fuse: str = "auto"


CPU_FUSE_MAX_BATCH = 16
FUSABLE = "__sweep_runner_fusable__"


def fusable_task(task: TaskFunction) -> TaskFunction:
    """Mark a task function as one that trains one run of this project from its config, so that the fused
    launcher may train several of its jobs as one group (runner/__main__.py's `main`)."""
    setattr(task, FUSABLE, True)
    return task


def fuse_pays(cfg: DictConfig) -> bool:
    """`fuse=auto`'s rule for a group of this config: on a GPU always, on a CPU up to CPU_FUSE_MAX_BATCH.
    A job's own replicates (runner/sweep/replicates.py) fuse by the same rule, whatever the launcher."""
    import torch

    on_gpu = str(cfg.device).startswith("cuda") or (str(cfg.device) == "auto" and torch.cuda.is_available())
    return on_gpu or int(cfg.batch_size) <= CPU_FUSE_MAX_BATCH


@dataclass
class _Claimed:
    """What a fused job's task leaves for the group: its config, folder and pruner hook."""
    cfg: DictConfig
    run_dir: Path
    epoch_end: Any = None  # an Optuna trial's pruner hook (runner/search/pruning.py), or None


def check_fuse_option(launcher: DictConfig) -> None:
    """Refuse a bad `hydra.launcher.fuse` in one line (runner/trust/preflight.py calls this before Hydra acts)."""
    if launcher.get("_target_") == FusedLauncherConf._target_ and str(launcher.get("fuse")).lower() not in (
            "auto", "true", "false"):
        from common.errors import ConfigError

        raise ConfigError(f"hydra.launcher.fuse={launcher.get('fuse')} is invalid: use auto, true or false")


class FusedLauncher(Launcher):
    # Jobs run in the sweep's process; the Optuna sweeper launches n_jobs trials as one call to fuse them.
    traits = LauncherTraits(in_process=True, fuses=True)

    def __init__(self, fuse: str = "auto") -> None:
        self.fuse = str(fuse).lower()
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _should_fuse(self, cfg: DictConfig) -> bool:
        if self.fuse != "auto":
            return self.fuse == "true"
        return fuse_pays(cfg)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from runner.fused.groups import fusible_groups, prefix_families
        from runner.trust.job_boundary import refusal

        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = [self._job_config(overrides, initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        if not getattr(self.task_function, FUSABLE, False):  # another app's task: its configs are not runs of ours
            log.info("Launching %d jobs one after another (the task is not a run of this project: nothing fuses)",
                     len(configs))
            return [self._run(cfg, self.task_function) for cfg in configs]
        groups, alone = fusible_groups(configs)
        # A job refused at the boundary (runner/trust/job_boundary.py) runs alone: its task records the refusal.
        refused = {i for i, cfg in enumerate(configs) if refusal(cfg)}
        alone += [i for g in groups for i in g if i in refused or len(set(g) - refused) < 2]
        groups = [[i for i in g if i not in refused] for g in groups if len(set(g) - refused) >= 2]
        unfused = [g for g in groups if not self._should_fuse(configs[g[0]])]
        groups = [g for g in groups if self._should_fuse(configs[g[0]])]
        if self.fuse == "auto":  # sharing epochs saves whole epochs whatever the batch: keep those families
            families = [f for g in unfused for f in prefix_families(configs, g)]
            groups += [f for f in families if len(f) >= 2]
            unfused = [f for f in families if len(f) < 2]
        alone = sorted(alone + [i for g in unfused for i in g])
        log.info("Launching %d jobs: %d fused group(s) %s, %d single", len(configs), len(groups),
                 [[initial_job_idx + i for i in g] for g in groups], len(alone))
        returns: dict[int, JobReturn] = {}
        for members in groups:
            returns.update(self._launch_fused(configs, members))
        for i in alone:
            returns[i] = self._run(configs[i], self.task_function)
        return [returns[i] for i in range(len(configs))]

    def _job_config(self, overrides: Sequence[str], idx: int) -> DictConfig:
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = str(idx)
            cfg.hydra.job.num = idx
        return cfg

    def _run(self, cfg: DictConfig, task) -> JobReturn:
        ret = run_job(hydra_context=self.hydra_context, task_function=task, config=cfg,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose,
                      execution_whitelist=self.hydra_context.execution_whitelist)
        return ret

    def _launch_fused(self, configs: list[DictConfig], members: list[int]) -> dict[int, JobReturn]:
        """Set up each member's job folder through Hydra, then train the group as one and fill in the values.

        An Optuna trial's pruner hook is built in its claim, as runner/__main__.py does for a single
        run: the trial number and study name are in the environment Hydra sets only while the job runs.
        """
        from runner.search.pruning import trial_pruner

        claimed: dict[int, _Claimed] = {}
        returns = {}
        for i in members:
            def claim(task_cfg: DictConfig, i: int = i) -> None:
                hydra_cfg = HydraConfig.get()
                claimed[i] = _Claimed(OmegaConf.create(OmegaConf.to_container(task_cfg)),
                                      Path(hydra_cfg.runtime.output_dir),
                                      trial_pruner(hydra_cfg.sweeper, task_cfg.get("objective", "val_acc")))
            returns[i] = self._run(configs[i], claim)
        from runner.fused.train_group import train_group

        values = train_group({i: (c.cfg, c.run_dir) for i, c in claimed.items()},
                             {i: c.epoch_end for i, c in claimed.items()})
        for i, ret in returns.items():
            if i in values:
                ret.return_value, ret.status = values[i], JobStatus.COMPLETED
        return returns
