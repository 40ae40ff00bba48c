"""Hydra callbacks: keep a sweep dir to one live sweep, and collect a sweep's results into tables when it ends."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from common.errors import ConfigError
from runner.sweep import locks
from runner.sweep.job_records import JOBS_DIR

log = logging.getLogger("runner.collect")


class LockSweepDir(Callback):
    """Refuse (one line, exit 2) a sweep into a sweep dir another live sweep is using."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if locks.is_shared_sweep(config.hydra):
            return
        try:
            locks.acquire(config.hydra.sweep.dir)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None  # Hydra's callback runner swallows Exceptions, not SystemExit

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        locks.release(config.hydra.sweep.dir)


class CollectOnMultirunEnd(Callback):
    """Tabulate the sweep when it ends, log how its jobs ended (`3 jobs: 0 completed, 3 refused`),
    and end the command with exit status 1 and one line when any job failed or was refused
    (runner/sweep/job_records.py). Diverged and pruned runs are results: they leave the status 0."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.sweep.job_records import clear_job_records

        # A grid re-run into its sweep dir runs every job again: the last sweep's records are not this one's.
        # (This sweep holds the dir's lock: LockSweepDir, before this callback, refused it otherwise.)
        if not locks.is_shared_sweep(config.hydra) and not locks.refused(config.hydra.sweep.dir):
            clear_job_records(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.collect import collect_and_report
        from runner.results.read import RESULTS_CSV
        from runner.sweep.job_records import ORDER, count_jobs, jobs_line
        from runner.record.run_folder import NO_VALUE

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if locks.refused(sweep_dir):  # the dir belongs to another live sweep
            return
        if not sweep_dir.is_dir():  # the sweep was refused before it made its folder
            return
        table = None
        try:
            table = collect_and_report([sweep_dir])
        except ConfigError as e:  # e.g. every job of the grid was refused: nothing to tabulate
            log.warning("%s", e)
        except Exception as e:  # the jobs are done and recorded: count them whatever the tables met
            log.warning("collecting %s failed (%s: %s); python -m runner.collect %s says more",
                        sweep_dir, type(e).__name__, e, sweep_dir)
        counts = count_jobs(sweep_dir)
        log.info("%s", jobs_line(counts))
        bad = {s: counts[s] for s in ORDER if s in NO_VALUE and counts[s]}
        if not bad or sys.exc_info()[1] is not None:  # the sweep is already ending with its own error
            return
        where = [f"{sweep_dir}/{JOBS_DIR}/<job>.json"] if any((sweep_dir / JOBS_DIR).glob("*.json")) else []
        if table is not None and table["status"].isin(NO_VALUE).any():
            where.append(f"{sweep_dir}/{RESULTS_CSV} (error column)")
        print(f"error: {sum(bad.values())} of {sum(counts.values())} jobs failed or were refused "
              f"({', '.join(f'{n} {s}' for s, n in bad.items())}){_first_reason(sweep_dir, table)}; the reasons "
              f"are in {' and '.join(where) or 'the sweep log'}", file=sys.stderr)
        raise SystemExit(1)  # Hydra's callback runner swallows Exceptions, not SystemExit


def _first_reason(sweep_dir: Path, table: Any) -> str:
    """`; first, job 3: <its error>` for the end-of-sweep line, from the table or the job records."""
    from runner.sweep.job_records import read_job_records
    from runner.record.run_folder import NO_VALUE

    if table is not None and "error" in table:
        rows = table[table["status"].isin(NO_VALUE) & table["error"].notna()]
        if len(rows):
            return f"; first, job {rows.iloc[0].get('job')}: {str(rows.iloc[0]['error']).splitlines()[0]}"
    records = read_job_records(sweep_dir)
    return f"; first, job {records[0]['job_num']}: {records[0]['reason']}" if records else ""
