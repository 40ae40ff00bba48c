"""`replicates=N`: one job trains N copies of its run that differ only in seed, and reports their mean.

Replicate k is the run with seed `seed + k` and `replicates: 1`, in `<job folder>/replicate_k/`:
a complete run folder (config.yaml, summary.json, metrics.csv, checkpoints, and a `.hydra/`
naming its own overrides), so runner.eval, `resume=` and runner.analyze take it like any run.
The replicates train as one fused stack (runner/fused/) wherever the fused launcher's `fuse=auto`
would fuse them (the same rules: runner/fused/groups.py `group_key`, launcher.py `fuse_pays`),
else one after another. The job's own summary.json and metrics.csv (runner/sweep/replicate_summary.py)
hold the mean, which is what the job returns to its sweeper.

Under an Optuna pruner the trial is told the per-epoch mean of the replicates' objective: fused,
the replicates stop together when the pruner says so; one after another, the last replicate
reports at each of its epochs the mean over all of them, and is the one pruned.
With replicates=1 nothing here runs: the job is its run, as it always was.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from common.errors import ConfigError
from common.io import atomic_write_text
from runner.config.objective import objective_of
from runner.config.schema import check_config
from runner.record.run_folder import CONFIG_FILE, HYDRA_DIR, HYDRA_FILE, OVERRIDES_FILE, REPLICATE_FOLDER, RunFolder, Status
from runner.search.pruning import EpochEnd
from runner.sweep.job_records import launched_as
from runner.sweep.locks import holding_run_folder
from runner.sweep.replicate_summary import filled_config, job_summary, mean_curve
from runner.sweep.rerun import prepare_job_folder

log = logging.getLogger("runner")

HYDRA_FILES = (CONFIG_FILE, HYDRA_FILE, OVERRIDES_FILE)


def replicates_of(cfg: Any) -> int:
    """How many replicates a job's config asks for (1 where it names none)."""
    return int(cfg.get("replicates") or 1)


def replicate_config(cfg: DictConfig, k: int) -> DictConfig:
    """Replicate k's config: the job's, with seed + k and replicates 1."""
    replicate = copy.deepcopy(cfg)
    with open_dict(replicate):
        replicate.seed = int(cfg.seed) + k
        replicate.replicates = 1
    return replicate


def fuses(cfg: DictConfig) -> bool:
    """Whether a replicate of this config trains fused with its siblings: fuse=auto's rules."""
    from runner.fused.groups import group_key
    from runner.fused.launcher import fuse_pays

    return group_key(cfg) is not None and fuse_pays(cfg)


class MeanCurve:
    """The job's pruner hook, fed by its replicates: it is told the per-epoch mean of their objective."""

    def __init__(self, hook: EpochEnd, metric: str) -> None:
        self.hook, self.metric = hook, metric
        self.values: dict[int, dict[int, float]] = {}  # epoch -> {replicate: value}
        self.decisions: dict[int, str | None] = {}  # asked once per epoch: a trial takes one report a step

    def observe(self, k: int, epoch: int, row: dict[str, float]) -> None:
        value = row.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.values.setdefault(epoch, {})[k] = float(value)

    def decide(self, epoch: int) -> str | None:
        if epoch not in self.decisions:
            values = list(self.values.get(epoch, {}).values())
            self.decisions[epoch] = self.hook(epoch, {self.metric: statistics.fmean(values)}) if values else None
        return self.decisions[epoch]


class ReplicateHook:
    """Replicate k's `epoch_end` (train()'s and the fused loop's): shows its row to the curve, and
    where it `decides`, returns the curve's decision for the epoch."""

    def __init__(self, curve: MeanCurve, k: int, decides: bool) -> None:
        self.curve, self.k, self.decides = curve, k, decides

    def observe(self, epoch: int, row: dict[str, float]) -> None:
        self.curve.observe(self.k, epoch, row)

    def __call__(self, epoch: int, row: dict[str, float]) -> str | None:
        self.observe(epoch, row)
        return self.curve.decide(epoch) if self.decides else None


def train_replicates(cfg: DictConfig, run_dir: Path, parallel_jobs: int = 1, epoch_end: EpochEnd | None = None,
                     shared: bool = False) -> dict[str, Any]:
    """Train the job's replicates into `run_dir`, write the job's summary; return it (train()'s arguments).

    `shared`: an Optuna sweep's job (a new folder each: nothing to reuse, no lock, runner/sweep/rerun.py).
    """
    check_config(cfg)  # a bad value is one line before any folder is touched
    folders = [Path(run_dir) / REPLICATE_FOLDER.format(k) for k in range(replicates_of(cfg))]
    with contextlib.ExitStack() as held:
        if not shared:
            held.enter_context(holding_run_folder(run_dir))
            earlier = [p for p in sorted(Path(run_dir).glob(REPLICATE_FOLDER.format("*"))) if p not in folders]
            reused = prepare_job_folder(cfg, run_dir, folders + earlier)  # an earlier job's extra ones too
            if reused is not None:
                return reused
        return _train(cfg, Path(run_dir), folders, parallel_jobs, epoch_end)


def _train(cfg: DictConfig, run_dir: Path, folders: list[Path], parallel_jobs: int,
           epoch_end: EpochEnd | None) -> dict[str, Any]:
    from runner.fused.train_group import train_group

    cfgs = [replicate_config(cfg, k) for k in range(len(folders))]
    seeds = [int(c.seed) for c in cfgs]
    job = ReplicatesJob(cfg, RunFolder(run_dir, tensorboard=False), OmegaConf.to_container(cfg, resolve=True),
                        folders, seeds)
    job.folder.write_config(job.plain)  # a killed job's config: a second attempt resumes it only if it is the same
    for folder, seed in zip(folders, seeds):
        write_hydra_files(run_dir, folder, seed)
    fused = fuses(cfgs[0])
    curve = MeanCurve(epoch_end, objective_of(cfg)) if epoch_end is not None else None
    hooks = {k: ReplicateHook(curve, k, decides=fused or k == len(cfgs) - 1) if curve else None
             for k in range(len(cfgs))}
    jobs = {k: (c, folder) for k, (c, folder) in enumerate(zip(cfgs, folders))}
    log.info("%d replicates, seeds %s, %s", len(cfgs), seeds, "as one fused stack" if fused else "one after another")
    try:
        if fused:  # train_group trains one after another a model it finds it can't fuse
            train_group(jobs, hooks, parallel_jobs, strict=True)
        else:
            for k, job_k in jobs.items():
                train_group({k: job_k}, {k: hooks[k]}, parallel_jobs, strict=True)
    except ConfigError:  # the job's config can't train: refused, leaving no replicate folder behind
        remove_untrained(folders)
        job.folder.close()
        raise
    except KeyboardInterrupt:  # the job says so too; running it again goes on from its replicates
        _write_job(job, interrupted=True)
        raise
    return _write_job(job, interrupted=False)


@dataclass
class ReplicatesJob:
    """A replicates job under way: its config, its own folder, its replicates' folders and seeds."""

    cfg: DictConfig
    folder: RunFolder
    plain: dict[str, Any]  # the job's resolved config
    folders: list[Path]
    seeds: list[int]
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)


def _write_job(job: ReplicatesJob, interrupted: bool) -> dict[str, Any]:
    """The job's own files from its replicates' folders: summary.json, config, the mean curve."""
    folder, folders = job.folder, job.folders
    summary = job_summary(objective_of(job.cfg), folders, job.seeds, job.started_at,
                          time.perf_counter() - job.t0, launched_as(folder.path))
    if interrupted:
        summary["status"] = Status.INTERRUPTED
    history = mean_curve(folders)
    try:
        folder.write_config(filled_config(job.plain, folders))
        folder.write_metrics(history)
        folder.write_summary(summary)
        folder.plot_curves(history)
    finally:
        folder.close()
    block = summary["replicates"]
    log.info("replicates: %s %s over %d of %d (std %s), statuses %s", summary["status"],
             "n/a" if block["mean"] is None else f"mean {block['mean']:.2f}", block["n"], block["requested"],
             "n/a" if block["std"] is None else f"{block['std']:.2f}", block["statuses"])
    return summary


def write_hydra_files(job_dir: Path, folder: Path, seed: int) -> None:
    """The job's `.hydra/` files, as Hydra would have written them for this replicate's own command:
    its seed and replicates=1 (runner/results/best_run.py repeats a run from them)."""
    source = job_dir / HYDRA_DIR
    if not source.is_dir():  # train_replicates called outside Hydra
        return
    for name in HYDRA_FILES:
        try:
            data = yaml.safe_load((source / name).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if name == OVERRIDES_FILE and isinstance(data, list):
            data = replicate_overrides(data, seed)
        elif name == CONFIG_FILE and isinstance(data, dict):
            data = {**data, "seed": seed, "replicates": 1}
        elif name == HYDRA_FILE and isinstance(data, dict) and isinstance(data.get("hydra"), dict):
            hydra = data["hydra"]
            if isinstance(hydra.get("overrides"), dict) and isinstance(hydra["overrides"].get("task"), list):
                hydra["overrides"]["task"] = replicate_overrides(hydra["overrides"]["task"], seed)
            if isinstance(hydra.get("runtime"), dict):
                hydra["runtime"]["output_dir"] = str(folder.resolve())
        (folder / HYDRA_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / HYDRA_DIR / name, yaml.safe_dump(data, sort_keys=False))


def replicate_overrides(overrides: list[str], seed: int) -> list[str]:
    """The job's command-line overrides as the replicate's: its own seed, replicates=1."""
    kept = [str(o) for o in overrides if str(o).lstrip("+~").split("=")[0] not in ("seed", "replicates")]
    return [*kept, f"seed={seed}", "replicates=1"]


def remove_untrained(folders: list[Path]) -> None:
    """Remove the replicate folders holding nothing but set-up files (a refused job leaves none)."""
    from runner.trust.preflight import SETUP_FILES

    for folder in folders:
        if folder.is_dir() and {p.name for p in folder.iterdir()} <= set(SETUP_FILES):
            shutil.rmtree(folder, ignore_errors=True)
