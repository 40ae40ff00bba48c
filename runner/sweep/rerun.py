"""Re-running a command into folders that already hold runs: reuse what finished, redo what didn't.

A grid sweep re-run with the same `hydra.sweep.dir` (after a kill, or to add nothing) gives each
job the folder it had before. Before training, `prepare_run_folder` looks at what is there:
  * a finished run (summary.json says completed, or diverged: both are final and a seeded run
    would repeat them) of the same config: nothing runs, its summary is returned and reused;
  * a finished run of another config: refused, so a changed grid never overwrites results;
  * an unfinished run (killed: no summary or `running`; `interrupted`; `failed`) of the same
    config with a checkpoint: resumed from it (`resume=` is set; the loop carries the history
    on, so its result equals an uninterrupted run's);
  * an unfinished run without a usable checkpoint, or of another config: the files a run writes
    are removed (Hydra's `.hydra/`, the log and anything else stay) and the job starts afresh.
`rerun=true` skips the reuse: the folder is emptied and the run starts over.
Optuna sweeps never get here (each trial has a new job number), nor does a run given `resume=`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from common.io import remove_stale_temp_files
from runner.config.keys import differences, result_neutral
from runner.record.run_folder import CHECKPOINT_FILE, CURVES_FILE, FINISHED, RUN_OUTPUTS, SUMMARY_FILE, Status, read_config, read_summary
from runner.sweep.locks import holding_run_folder

log = logging.getLogger("runner")

# Only what a run writes (runner/record/run_folder.py's RUN_OUTPUTS) is ever removed: a folder given as
# hydra.run.dir may hold other things (`hydra.run.dir=.` is the project itself), and Hydra's
# `.hydra/` and the log are this attempt's.


def _same_run(requested: dict[str, Any], stored: dict[str, Any] | None) -> list[str] | None:
    """None if `stored` is the requested run; else the differences (empty list: nothing stored to compare)."""
    if not stored:
        return []
    requested = dict(requested)
    if requested.get("dataset", {}).get("num_classes") is None:  # filled in by the run from the data
        requested["dataset"] = {**requested["dataset"], "num_classes": stored.get("dataset", {}).get("num_classes")}
    changed = differences(requested, stored, result_neutral)
    return changed or None


def clear_run_folder(run_dir: Path) -> None:
    """Remove an earlier attempt's results (and its half-written temporary files), nothing else."""
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    remove_stale_temp_files(run_dir)


def prepare_run_folder(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """Return the summary of a finished identical run in `run_dir` (reuse it), else ready the folder and return None."""
    if cfg.get("resume") or not run_dir.is_dir():
        return None
    summary = read_summary(run_dir)
    stored = read_config(run_dir)
    if summary is None and stored is None:
        clear_run_folder(run_dir)  # at most a killed attempt's first files
        return None
    requested = OmegaConf.to_container(cfg, resolve=True)
    changed = _same_run(requested, stored)
    status = (summary or {}).get("status", Status.RUNNING)
    if cfg.get("rerun"):
        log.info("rerun=true: clearing %s (%s) and running again", run_dir, status)
        clear_run_folder(run_dir)
        return None
    if status in FINISHED:
        if changed is None:
            log.info("%s already holds this run, %s: reusing it (rerun=true runs it again)", run_dir, status)
            return summary
        raise ConfigError(f"{run_dir} holds a {status} run of another config ({', '.join(changed[:3]) or 'no config.yaml'}); "
                          f"use a new hydra.sweep.dir (or hydra.run.dir), or rerun=true to replace it")
    checkpoint = run_dir / CHECKPOINT_FILE
    if changed is None and checkpoint.is_file():
        log.info("%s holds this run cut off (%s): resuming from its checkpoint", run_dir, status)
        for stale in (SUMMARY_FILE, CURVES_FILE):
            (run_dir / stale).unlink(missing_ok=True)
        cfg.resume = str(checkpoint)
        return None
    log.info("%s holds an unfinished run (%s): clearing it and starting afresh", run_dir, status)
    clear_run_folder(run_dir)
    return None


def prepare_job_folder(cfg: DictConfig, run_dir: Path, parts: list[Path]) -> dict[str, Any] | None:
    """`prepare_run_folder` for a job whose results are the run folders `parts` inside it (its replicates).

    A finished job of the same config is reused and one of another config refused, as a run's; an
    unfinished one of the same config keeps its parts, each then readied on its own (reused,
    resumed or started afresh); anything else (another config, `rerun=true`) is cleared, parts too.
    """
    summary = read_summary(run_dir)
    if not cfg.get("rerun") and (summary or {}).get("status") in FINISHED:
        return prepare_run_folder(cfg, run_dir)
    stored = read_config(run_dir)
    if cfg.get("rerun") or _same_run(OmegaConf.to_container(cfg, resolve=True), stored):
        log.info("%s: clearing %s and its %d run folders", "rerun=true" if cfg.get("rerun") else
                 "another config's unfinished job", run_dir, sum(part.is_dir() for part in parts))
        for part in parts:
            if part.is_dir() and not part.is_symlink():
                shutil.rmtree(part)
    clear_run_folder(run_dir)  # the job's own files: written again from its parts
    return None


@contextlib.contextmanager
def claimed_run_folder(cfg: DictConfig, run_dir: Path, shared: bool) -> Iterator[dict[str, Any] | None]:
    """Hold `run_dir` for this run and ready it (`prepare_run_folder`); yields a reusable summary or None.

    `shared`: an Optuna sweep, whose trials each get a new folder: nothing to reuse, left alone.
    """
    if shared:
        yield None
        return
    with holding_run_folder(run_dir):
        yield prepare_run_folder(cfg, run_dir)
