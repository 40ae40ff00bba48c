"""A resumable Optuna sweeper: the Hydra Optuna plugin's sweeper, with the study as the source of truth.

Selected by `hydra/sweeper=runner_optuna` (hydra_plugins/sweep_runner_sweeper/, which Hydra finds on
its own in any app; conf/hparams_search/*.yaml pick it). It takes the same config keys as the
plugin's sweeper, and adds:

* Resume. The study lives in persistent storage (by default sqlite in the sweep dir) and
  `n_trials` is the study's total, not "this many more": a re-run of the same command runs only
  the trials still missing, numbers job folders on from the highest one used (a finished
  trial's folder is never overwritten), fails the trials a killed run left RUNNING and runs
  their parameters again, and re-seeds a seeded sampler so it does not replay its first
  suggestions. A suggestion whose parameters already ran is not run again.
* Failures don't end the search. A job that returns None or NaN, or raises, is told to Optuna as
  FAIL with its status from the job's summary.json (failed, diverged, ...) as a user attribute,
  and the search goes on (max_failure_rate defaults to 1.0 in our config; lower it to stop early).
* best.json (and the plugin's optimization_results.yaml) and Optuna's plots in the sweep dir at the
  end (runner/optuna_report.py), and the best parameters and value in the log.
* Several objectives (`objective=[val_acc,params_m]` with `hydra.sweeper.direction=[maximize,minimize]`):
  a multi-objective study, its objectives' names stored as the study's metric names; best.json then
  holds its Pareto front (runner/results/pareto.py). Directions that don't fit the objectives, a pruner or
  a single-objective sampler are refused in one line; so is resuming a study with other directions.
* Pruning (`hydra/sweeper/pruner=...`): each job reports to its own trial and stops when told
  (runner/search/pruning.py); the trial is told PRUNED. A trial starts as soon as one of n_jobs slots is
  free: each job is a launcher call of its own, from a pool of n_jobs threads (one slot, in this
  thread, for the basic launcher, which runs jobs in this process). With the fused launcher
  (`hydra/launcher=fused`; any launcher whose traits say it fuses, runner/hydra_adapter.py), up to n_jobs trials are asked and launched as one batch, one
  launcher call, so that it can train them as one fused group; the next batch is asked when
  the whole batch has ended (a trial pruned early frees its slot only then).
* Several workers on one study (runner/search/storage.py, runner/search/asking.py): heartbeats
  for running trials, job folders claimed with an exclusive mkdir, and a trial asked after the
  study was full (`surplus`) or with the parameters another worker just took (`duplicate_of`)
  does not run.

What counts towards n_trials: every trial that ran to an end, whether COMPLETE, PRUNED or FAIL
(a failing parameter set is a result: counting it keeps a re-run from running it again and again),
plus trials RUNNING in another live process (several machines on one study). Not counted: a
trial a killed run left RUNNING (its parameters are re-queued, and the re-run counts instead),
and a suggestion skipped as a duplicate or surplus. So the study can hold more trials than n_trials; the
`counted` user attribute is not stored, the rule above is applied when reading.

Each trial carries user attributes: job_num, run_dir, sweep_dir, owner (host:pid of the sweeper
process that ran it), status (the job's summary.json status), error, and where it applies
retry_of / retried / duplicate_of / surplus, params_set.

The module only imports Hydra at the top: Hydra imports it when it scans its plugins
(hydra_plugins/sweep_runner_sweeper/), and Optuna is only loaded when a sweep starts. The Optuna
plugin's private functions it reuses are called through runner/hydra_adapter.py.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import socket
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError
from runner import hydra_adapter
from runner.config.objective import objectives_of
from runner.search.asking import Search, TrialAsking
from runner.search.db import study_url
from runner.search.pruning import build_pruner, wants_pruning
from runner.search.space import _space_size, _tally
from runner.search.storage import heartbeat_enabled, study_setup
from runner.search.study_rules import check_fixed_overrides, check_options, create_study, is_grid, resume_command
from runner.search.trials import record_result

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(TrialAsking, OptunaSweeper):
    """Subclass of the plugin's OptunaSweeper: same config, its own `sweep()` loop.

    The plugin's OptunaSweeperImpl (self.sweeper) still parses the search space, builds the
    sampler, sets up the launcher and turns trials into overrides; only the loop around
    ask/launch/tell is ours, because its two problems (a fresh `n_trials` and job numbers
    from 0 on every start, and a failure or NaN ending the sweep) sit in the middle of it.
    """

    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float, custom_search_space: str | None,
                 params: DictConfig | None, pruner: DictConfig | None = None, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> None:
        try:  # Hydra builds the sweeper before anything else: a bad setting ends here, in one line
            check_options(pruner, n_jobs=n_jobs, n_trials=n_trials, max_failure_rate=max_failure_rate,
                          heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        # Kept to build the sampler again with another seed on resume (see _reseed).
        self._sampler_cfg = OmegaConf.to_container(sampler, resolve=True) if isinstance(sampler, DictConfig) else None
        super().__init__(sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
                         custom_search_space, params)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.pruner_cfg = pruner
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self._heartbeats: dict[int, Any] = {}  # trial number -> Optuna heartbeat thread, while it runs
        self._next_job = 0
        self._waiting = False  # logged once that this worker waits for trials running elsewhere

    # ------------------------------------------------------------------ the loop
    def sweep(self, arguments: list[str]) -> None:
        from runner.search.db import display_url
        from runner.optuna_report import write_report

        search = self._open_search(arguments)
        stopped, failed_out = self._run_trials(search)
        write_report(search.study, search.sweep_dir, search.url)
        if failed_out:
            raise RuntimeError(f"Optuna search stopped: {stopped}")
        if stopped:
            log.warning("Stopping the search before n_trials=%d: %s", search.n_trials, stopped)
        if isinstance(search.url, str):
            log.info("The study in a browser: optuna-dashboard %s", shlex.quote(display_url(search.url)))

    def _open_search(self, arguments: list[str]) -> Search:
        """The search space, sampler and study, new or resumed; a bad setting ends here in one line, exit 2,
        before the sweep dir is made."""
        from runner.results.pareto import check_sweep_objectives  # pandas: loaded when a sweep starts, not at Hydra's plugin scan

        impl = self.sweeper
        assert impl.config is not None and impl.launcher is not None
        config = impl.config
        sweep_dir = Path(str(config.hydra.sweep.dir))
        # Search space: as the plugin does it (hydra.sweeper.params, then command-line sweeps).
        space, fixed_params, fixed_overrides = hydra_adapter.search_space(impl, arguments)
        sampler, n_trials = impl.sampler, impl.n_trials
        if is_grid(sampler):
            grid = {name: hydra_adapter.grid_choices(impl, d) for name, d in space.items()}
            sampler = sampler(grid)
            n_trials = min(n_trials, math.prod(len(v) for v in grid.values()))
        wants_pruner = wants_pruning(self.pruner_cfg)
        # The pruner prunes in the jobs; the study here has it too, because TPE samples differently under Hyperband.
        pruner = build_pruner(self.pruner_cfg) if wants_pruner else None
        # A sqlite path in the sweep dir stays a path; the storage is opened under the setup lock.
        url = study_url(impl.storage, sweep_dir) if isinstance(impl.storage, str) else impl.storage
        try:
            check_sweep_objectives(config)  # as many directions as objectives (also checked before Hydra acted)
            if wants_pruner and impl.storage is None:
                raise ConfigError("hydra.sweeper.pruner needs a storage each trial's job can open: set "
                                  "hydra.sweeper.storage to a URL (the default is sqlite in the sweep dir)")
            with study_setup(url, self.heartbeat_interval, self.grace_period) as storage:
                study = create_study(impl.study_name, storage, sampler, pruner, hydra_adapter.directions(impl), url)
                url = url if isinstance(url, str) else storage  # shown in logs and best.json
                check_fixed_overrides(study, fixed_params, fixed_overrides, url)  # may store them: a write
                objectives = objectives_of(config)
                if len(objectives) > 1:  # the front's names in best.json and Optuna's plots
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # ExperimentalWarning
                        study.set_metric_names(list(objectives))
        except ConfigError as e:  # one line and exit 2, as for a bad run config
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # made once the storage is known good: a refusal leaves none
        # Optuna warns on every ask that heartbeats are meant for Study.optimize: we run them ourselves.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        self._recover_stale(study)
        counted, running_elsewhere = _tally(study)
        existing = len(study.get_trials(deepcopy=False))
        if existing and counted + running_elsewhere < n_trials:
            study.sampler = self._reseed(sampler, existing)
        self._next_job = self._next_job_num(study, sweep_dir)
        space_size = _space_size(space) if impl.custom_search_space_extender is None else None
        search = Search(study, url, sweep_dir, space, fixed_params, fixed_overrides, space_size, n_trials)
        self._log_start(search, counted, running_elsewhere)
        return search

    def _log_start(self, search: Search, counted: int, running_elsewhere: int) -> None:
        """Where the study is and how far it has come (the tally `_open_search` took), its sampler and pruner."""
        from runner.search.db import display_url

        study, n_trials = search.study, search.n_trials
        objectives, directions = objectives_of(self.sweeper.config), hydra_adapter.directions(self.sweeper)
        log.info("Optuna study '%s' in %s: %d of n_trials=%d done%s; job folders from %s/%d",
                 study.study_name, display_url(search.url), counted, n_trials,
                 f", {running_elsewhere} running elsewhere" if running_elsewhere else "", search.sweep_dir,
                 self._next_job)
        log.info("Sampler: %s, pruner: %s, direction: %s", type(study.sampler).__name__,
                 self.pruner_cfg._target_.split(".")[-1] if wants_pruning(self.pruner_cfg) else "none",
                 ", ".join(f"{d} {o}" if len(objectives) > 1 else d for d, o in zip(directions, objectives)))
        if counted + running_elsewhere < n_trials and self.sweeper.storage is not None:
            log.info("If this stops early, resume with: %s", resume_command(self.sweeper.config))

    def _slots(self) -> tuple[int, bool]:
        """How many trials run at once, and whether each round of them is launched as one batch.

        A trial starts as soon as a slot is free (a pruned trial frees its slot at once): one job per
        launcher call, from a pool of n_jobs threads. A launcher that runs jobs in this process (the
        basic one) runs one at a time, in this thread (Ctrl-C then reaches the job). A launcher that
        fuses (hydra/launcher=fused): up to n_jobs trials are asked, then launched as one batch (one
        launcher call, in this thread) so it can train them fused; a pruned trial's slot frees when
        its batch ends.
        """
        impl = self.sweeper
        traits = hydra_adapter.traits_of(impl.launcher)
        slots = impl.n_jobs if traits.fuses else 1 if traits.in_process else impl.n_jobs
        if slots < impl.n_jobs:
            log.info("hydra.sweeper.n_jobs=%d with a launcher that runs jobs in this process: trials run one at "
                     "a time (hydra/launcher=joblib runs them in parallel)", impl.n_jobs)
        return slots, traits.fuses

    def _run_trials(self, search: Search) -> tuple[str | None, bool]:
        """Ask, launch and tell until the study is full or the search stops; (why it stopped, whether
        it stopped for too many failures)."""
        study, max_failure_rate = search.study, self.sweeper.max_failure_rate
        slots, batched = self._slots()
        pool = ThreadPoolExecutor(slots, thread_name_prefix="trial") if slots > 1 and not batched else None
        batch: list[tuple[Any, list[str], int]] = []  # (trial, overrides, job number) asked for the next batch
        in_flight: dict[Future, tuple[Any, int]] = {}
        recent: list[bool] = []  # outcomes since the failure rate was last checked
        stopped: str | None = None
        failed_out = False

        def finish(trial: Any, ret: JobReturn) -> None:
            nonlocal stopped, failed_out
            self._stop_heartbeat(trial.number)
            recent.append(record_result(study, trial, ret))
            if len(recent) >= slots:
                failures = recent.count(False)
                if failures / len(recent) > max_failure_rate and not failed_out:
                    stopped, failed_out = (f"{failures} of the last {len(recent)} trials failed, more than "
                                           f"hydra.sweeper.max_failure_rate={max_failure_rate}"), True
                    log.error("Stopping the search: %s", stopped)
                recent.clear()

        try:
            while True:
                self._recover_stale(study, skip={t.number for t, _ in in_flight.values()})
                while stopped is None and len(in_flight) + len(batch) < slots:
                    step = self._start_trial(search)
                    if step is None or isinstance(step, str):
                        stopped = step
                        break
                    trial, override, job_num = step
                    if batched:
                        batch.append(step)
                    elif pool is None:
                        finish(trial, self._launch(override, job_num))
                    else:
                        in_flight[pool.submit(self._launch, override, job_num)] = (trial, job_num)
                if batch:
                    for (trial, _, _), ret in zip(batch, self._launch_batch(batch)):
                        finish(trial, ret)
                    batch.clear()
                    continue
                if in_flight:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        finish(in_flight.pop(future)[0], future.result())
                    continue
                if stopped is None and self._wait_for_others(study):
                    continue
                break
        except BaseException:  # Ctrl-C (or a launcher error): leave no trial of ours RUNNING
            log.warning("Search interrupted: re-queueing the trials that were running")
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            self._stop_heartbeat()
            self._recover_stale(study)
            raise
        if pool is not None:
            pool.shutdown()
        return stopped, failed_out

    def _launch(self, override: list[str], job_num: int) -> JobReturn:
        """Run one trial's job through the configured launcher (a batch of one) and wait for it."""
        return self.sweeper.launcher.launch([override], initial_job_idx=job_num)[0]

    def _launch_batch(self, batch: list[tuple[Any, list[str], int]]) -> list[JobReturn]:
        """Run trials' jobs as one launcher call (the fused launcher fuses those it can) and wait for them.

        A launcher numbers a call's jobs on from `initial_job_idx`; a job number another worker took
        in between (runner/search/storage.py claim_job_dir) splits the batch into one call per run of
        consecutive numbers.
        """
        if len(batch) > 1:
            log.info("Trials %s (jobs %s) launched as one batch: the fused launcher trains those that fuse as one "
                     "group; a trial pruned early frees its slot when the batch ends", [t.number for t, _, _ in batch],
                     [job_num for _, _, job_num in batch])
        returns: list[JobReturn] = []
        start = 0
        for end in range(1, len(batch) + 1):
            if end == len(batch) or batch[end][2] != batch[end - 1][2] + 1:
                returns += self.sweeper.launcher.launch([override for _, override, _ in batch[start:end]],
                                                        initial_job_idx=batch[start][2])
                start = end
        return returns

    def _stop_heartbeat(self, number: int | None = None) -> None:
        """Stop one trial's heartbeat thread (all of them with no number)."""
        for n in [number] if number is not None else list(self._heartbeats):
            thread = self._heartbeats.pop(n, None)
            if thread is not None:
                thread.join()

    def _wait_for_others(self, study: Any) -> bool:
        """The study is full but other workers still run trials: wait (True) if a dead one's trial can
        come back to us (a heartbeat says when), else return False and end."""
        _, running = _tally(study)
        if not running:
            return False
        if not heartbeat_enabled(study):
            log.info("%d trial(s) still running in other processes; not waiting for them", running)
            return False
        if not self._waiting:
            grace = self.grace_period or 2 * self.heartbeat_interval
            log.info("Waiting for %d trial(s) running in other workers (the trial of a worker that stops is "
                     "run again here after %d s without a heartbeat)", running, grace)
            self._waiting = True
        time.sleep(min(5.0, float(self.heartbeat_interval)))
        return True
