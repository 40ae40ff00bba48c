"""`python -m runner [overrides]`: one run, or with `-m` a sweep, composed by Hydra from conf/."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import runner.config.schema  # noqa: F401  (importing it registers the schema Hydra composes with)
from common.errors import ConfigError, entry_point, error_line, os_failure
from runner.config.objective import objective_of, objective_value, objectives_of
from runner.config.run_names import register_resolvers
from runner.fused.launcher import fusable_task
from runner.hydra_adapter import traits_of
from runner.record.run_folder import Status, record_refused
from runner.run import interrupts
from runner.run.gpu_lease import lease_folder
from runner.search.pruning import trial_pruner
from runner.sweep import locks
from runner.sweep.job_records import write_job_record
from runner.sweep.replicates import replicates_of, train_replicates
from runner.sweep.rerun import claimed_run_folder
from runner.trust.allowed import HYDRA_TARGETS
from runner.trust.job_boundary import install as check_every_job_config, refusal
from runner.trust.preflight import preflight, remove_refused_run_folder
from runner.trust.targets import flat

log = logging.getLogger("runner")
register_resolvers()  # ${run_suffix:} in conf/config.yaml's run and sweep dirs
check_every_job_config()  # Hydra's config loader checks each job's final config (runner/trust/job_boundary.py)


def parallel_jobs(hydra_cfg: DictConfig) -> int:
    """How many trials the launcher runs at once on this machine, as its traits say (joblib's n_jobs, -1
    meaning all cores; on Ray, as many as the CPUs it gave this trial allow; 1 for the others)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return 1
    return traits_of(hydra_cfg.launcher).trials_at_once(hydra_cfg.launcher)


# Hydra instantiates only these (sweeper, sampler, launcher, callbacks); the run's own classes are
# allowed inside train() and runner.eval, each with its own list (runner/trust/targets.py).
@hydra.main(config_path="../conf", config_name="config", execution_whitelist=flat(HYDRA_TARGETS))
@fusable_task  # hydra/launcher=fused may train several of its jobs as one group
def main(cfg: DictConfig) -> float | tuple[float, ...] | None:
    from runner.run.train import train  # torch and friends load after Hydra has parsed the command line

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    interrupts.install_sigterm_handler()  # also in a joblib worker process, where the job runs
    interrupts.current_run_dir = run_dir
    reason = refusal(cfg)
    if reason is not None:  # a sweep job whose final config failed the check: it records that, runs nothing
        log.error("run %s refused: %s", run_dir, reason)
        record_refused(run_dir, reason)
        return None
    try:
        epoch_end = trial_pruner(hydra_cfg.sweeper, objective_of(cfg)) if in_sweep else None
        jobs = parallel_jobs(hydra_cfg)
        if replicates_of(cfg) > 1 and not cfg.get("resume"):  # resume= continues one run: its checkpoint's
            summary = train_replicates(cfg, run_dir, parallel_jobs=jobs, epoch_end=epoch_end,
                                       shared=locks.is_shared_sweep(hydra_cfg))
        else:
            with claimed_run_folder(cfg, run_dir, shared=locks.is_shared_sweep(hydra_cfg)) as reused:
                summary = reused if reused is not None else train(
                    cfg, run_dir, parallel_jobs=jobs, epoch_end=epoch_end, typed=list(hydra_cfg.overrides.task),
                    gpu_leases=lease_folder(hydra_cfg, jobs) if in_sweep else None)  # a GPU per parallel trial
    except ConfigError as e:
        if in_sweep:  # one bad combination must not end the sweep: it is recorded as failed
            log.error("run %s failed: %s", run_dir, e)
            write_job_record(hydra_cfg, Status.REFUSED, str(e))
            return None
        print(f"error: {e}", file=sys.stderr)
        remove_refused_run_folder(run_dir, hydra_cfg.job.name)  # a refused run leaves no folder
        sys.exit(2)
    except Exception as e:
        if in_sweep:
            log.exception("run %s failed: %s", run_dir, e)
            write_job_record(hydra_cfg, Status.FAILED, str(e))
            return None
        line, status = error_line(e, run_dir / f"{hydra_cfg.job.name}.log", where=run_dir)
        print(f"error: {line}", file=sys.stderr)  # the traceback is in the run's log file
        if os_failure(e, run_dir) is not None:  # a disk that is full or can't be written: nothing worth keeping
            remove_refused_run_folder(run_dir, hydra_cfg.job.name)
        sys.exit(status)  # else the run folder stays: its summary.json records the run as failed
    log.info("run folder: %s", run_dir)
    if "replicates" not in summary:  # a replicates job has logged its mean (runner/sweep/replicates.py)
        log.info("status: %s, best val acc: %s (epoch %s)", summary["status"],
                 "n/a" if summary["best_val_acc"] is None else f"{summary['best_val_acc']:.2f}", summary["best_epoch"])
    return objective_value(objectives_of(cfg), summary)  # a tuple with several objectives


if __name__ == "__main__":
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own errors reach entry_point, which prints them as one line
    logging.raiseExceptions = False  # a log file that can't be written (disk full) prints no traceback per line
    outputs = "the output folder (hydra.run.dir or hydra.sweep.dir)"  # a disk error Hydra meets names no path
    with interrupts.exit_cleanly_when_interrupted(), entry_point(where=outputs):
        runner.config.schema.check_command_line(sys.argv[1:])
        preflight(sys.argv[1:], main, config_path="../conf", config_name="config")  # refuses before Hydra acts
        main()
