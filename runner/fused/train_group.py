"""A fused group's jobs from claimed folders to values: reuse, resume, fuse, or fall back to single runs.

The folder logic is a single run's (runner/sweep/rerun.py): each member's folder is locked for as long
as the group trains, a finished identical run is reused, a cut-off one resumes on its own (a
resumed trial is not fused), and a folder of another config is refused for that job only.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from common.errors import ConfigError
from runner.config.objective import objective_value as run_value, objectives_of
from runner.fused.stack import NotFusible
from runner.search.pruning import EpochEnd
from runner.sweep.locks import holding_run_folder
from runner.sweep.rerun import clear_run_folder, prepare_run_folder

log = logging.getLogger("runner")


def objective_value(cfg: DictConfig, summary: dict[str, Any]) -> float | tuple[float, ...] | None:
    """What runner/__main__.py returns to the sweeper for a run (runner/config/objective.py)."""
    return run_value(objectives_of(cfg), summary)


def train_group(jobs: dict[int, tuple[DictConfig, Path]],
                epoch_ends: dict[int, EpochEnd | None] | None = None, parallel_jobs: int = 1,
                strict: bool = False) -> dict[int, float | None]:
    """Train the jobs {index: (config, run folder)}; return each job's value (None: failed, as in a sweep).

    `epoch_ends`: {index: the job's pruner hook} for an Optuna trial's job (runner/search/pruning.py).
    `parallel_jobs`: as train()'s. `strict`: a ConfigError (a config that can't train, the same for
    every member, e.g. a job's replicates) is raised instead of failing that member alone.
    """
    from runner.fused.loop import train_fused
    from runner.run.train import train

    hooks = epoch_ends or {}
    values: dict[int, float | None] = {}
    fused: dict[int, tuple[DictConfig, Path]] = {}
    with contextlib.ExitStack() as held:
        for i, (cfg, run_dir) in jobs.items():
            held.enter_context(holding_run_folder(run_dir))
            try:
                reused = prepare_run_folder(cfg, run_dir)
            except ConfigError as e:
                if strict:
                    raise
                log.error("run %s failed: %s", run_dir, e)
                values[i] = None
                continue
            if reused is not None:
                values[i] = objective_value(cfg, reused)
            elif cfg.get("resume"):  # a cut-off run goes on from its checkpoint, on its own
                values[i] = _single(train, cfg, run_dir, hooks.get(i), parallel_jobs, strict)
            else:
                fused[i] = (cfg, run_dir)
        if len(fused) < 2:
            values.update({i: _single(train, cfg, run_dir, hooks.get(i), parallel_jobs, strict)
                           for i, (cfg, run_dir) in fused.items()})
            return values
        try:
            summaries = train_fused([cfg for cfg, _ in fused.values()], [run_dir for _, run_dir in fused.values()],
                                    [hooks.get(i) for i in fused], parallel_jobs)
            values.update({i: objective_value(cfg, s) for (i, (cfg, _)), s in zip(fused.items(), summaries)})
        except NotFusible as e:  # found when the model is built: train the group one after another
            log.info("%s: training the group's %d trials one after another", e, len(fused))
            for i, (cfg, run_dir) in fused.items():
                clear_run_folder(run_dir)
                values[i] = _single(train, cfg, run_dir, hooks.get(i), parallel_jobs, strict)
        except Exception as e:  # recorded as failed in each trial's summary.json; the sweep goes on
            if strict and isinstance(e, ConfigError):
                raise
            log.exception("fused group %s failed: %s", [str(d) for _, d in fused.values()], e)
            values.update({i: None for i in fused})
    return values


def _single(train, cfg: DictConfig, run_dir: Path, epoch_end: EpochEnd | None, parallel_jobs: int = 1,
            strict: bool = False) -> float | None:
    try:
        return objective_value(cfg, train(cfg, run_dir, parallel_jobs=parallel_jobs, epoch_end=epoch_end))
    except Exception as e:
        if strict and isinstance(e, ConfigError):
            raise
        log.exception("run %s failed: %s", run_dir, e)
        return None
