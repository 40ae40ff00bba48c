"""A resumable Optuna sweeper: the Hydra Optuna plugin's sweeper, with the study as the source of truth.

Selected by conf/hydra/sweeper/optuna.yaml, which shadows the plugin's own `hydra/sweeper=optuna`
(our conf dir comes before the plugin's structured configs on Hydra's search path), so both
`hparams_search=<file>` and `hydra/sweeper=optuna` on the command line get this class. It takes
the same config keys as the plugin's sweeper, and adds:

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

What counts towards n_trials: every trial that ran to an end, whether COMPLETE, PRUNED or FAIL
(a failing parameter set is a result: counting it keeps a re-run from running it again and again),
plus trials RUNNING in another live process (several machines on one study). Not counted: a
trial a killed run left RUNNING (its parameters are re-queued, and the re-run counts instead),
and a suggestion skipped as a duplicate. So the study can hold more trials than n_trials; the
`counted` user attribute is not stored, the rule above is applied when reading.

Each trial carries user attributes: job_num, run_dir, sweep_dir, owner (host:pid of the sweeper
process that ran it), status (the job's summary.json status), error, and where it applies
retry_of / retried / duplicate_of.

The module only imports Hydra at the top: `runner/__main__.py` registers the class with Hydra's
plugin registry on every start, and Optuna (~0.4 s to import) is only loaded when a sweep starts.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import logging
import math
import os
import random
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Statuses a job's summary.json can hold once the job has ended by itself.
ENDED_STATUSES = ("completed", "diverged", "failed")
# Enumerate a fully discrete search space up to this many points to find unseen ones.
MAX_ENUMERATED_SPACE = 100_000
# Suggestions in a row that may repeat a parameter set before the search is declared exhausted.
MAX_DUPLICATE_ASKS = 20
# A RUNNING trial with no owner attribute older than this was left by a killed sweeper (see _owner_gone).
OWNERLESS_GRACE_S = 60.0


def register() -> None:
    """Make the class known to Hydra, which instantiates sweepers only from its plugin registry.

    Hydra finds plugins by scanning the `hydra_plugins` namespace package (or entry points);
    a `_target_` elsewhere fails with "Unknown plugin class" unless registered by hand.
    """
    Plugins.instance().register(ResumableOptunaSweeper)


class ResumableOptunaSweeper(OptunaSweeper):
    """Subclass of the plugin's OptunaSweeper: same config, its own `sweep()` loop.

    The plugin's OptunaSweeperImpl (self.sweeper) still parses the search space, builds the
    sampler, sets up the launcher and turns trials into overrides; only the loop around
    ask/launch/tell is ours, because its two problems (a fresh `n_trials` and job numbers
    from 0 on every start, and a failure or NaN ending the sweep) sit in the middle of it.
    """

    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float, custom_search_space: str | None,
                 params: DictConfig | None) -> None:
        # Kept to build the sampler again with another seed on resume (see _reseed).
        self._sampler_cfg = OmegaConf.to_container(sampler, resolve=True) if isinstance(sampler, DictConfig) else None
        super().__init__(sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
                         custom_search_space, params)
        if n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_jobs={n_jobs} is invalid: use 1 or more (trials launched per batch)")
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    # ------------------------------------------------------------------ the loop
    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

        from runner.optuna_report import display_url, write_report

        impl = self.sweeper
        assert impl.config is not None and impl.launcher is not None
        config = impl.config
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder

        # Search space: as the plugin does it (hydra.sweeper.params, then command-line sweeps).
        impl._process_searchspace_config()
        space, fixed_params, fixed_overrides = create_params_from_overrides(
            impl._parse_sweeper_params_config() + list(arguments))
        for name in fixed_params:
            space.pop(name, None)
        directions = impl._get_directions()
        if len(directions) != 1:
            raise ValueError(f"hydra.sweeper.direction={directions}: a run returns one value (best val acc), "
                             "so use a single direction, e.g. maximize")

        sampler = impl.sampler
        n_trials = impl.n_trials
        if _is_grid(sampler):
            grid = {name: impl._to_grid_sampler_choices(d) for name, d in space.items()}
            sampler = sampler(grid)
            n_trials = min(n_trials, math.prod(len(v) for v in grid.values()))

        storage = self._storage()
        study = optuna.create_study(study_name=impl.study_name, storage=storage, sampler=sampler,
                                    directions=directions, load_if_exists=True)
        self._check_fixed_overrides(study, fixed_params, fixed_overrides)
        self._recover_stale(study)
        counted, running_elsewhere = _tally(study)
        existing = len(study.get_trials(deepcopy=False))
        if existing and counted + running_elsewhere < n_trials:
            study.sampler = self._reseed(sampler, existing)

        next_job = self._next_job_num(study, sweep_dir)
        log.info("Optuna study '%s' in %s: %d of n_trials=%d done%s; job folders from %s/%d",
                 study.study_name, display_url(storage), counted, n_trials,
                 f", {running_elsewhere} running elsewhere" if running_elsewhere else "", sweep_dir, next_job)
        log.info("Sampler: %s, direction: %s", type(study.sampler).__name__, directions[0])
        if counted + running_elsewhere < n_trials and storage is not None:
            log.info("If this stops early, resume with: %s", self._resume_command(config))

        space_size = _space_size(space) if impl.custom_search_space_extender is None else None
        stopped: str | None = None
        while True:
            counted, running_elsewhere = _tally(study)
            to_go = n_trials - counted - running_elsewhere
            if to_go <= 0:
                break
            seen = _seen_params(study)
            if space_size is not None and len(seen) >= space_size:
                stopped = f"all {space_size} points of the search space have run"
                break
            trials, overrides = [], []
            for _ in range(min(impl.n_jobs, to_go)):
                asked = self._ask_unseen(study, space, fixed_params, fixed_overrides, seen, space_size)
                if asked is None:
                    break
                trial, override = asked
                run_dir = sweep_dir / str(next_job + len(trials))
                trial.set_user_attr("job_num", next_job + len(trials))
                trial.set_user_attr("run_dir", str(run_dir.resolve()))
                trial.set_user_attr("sweep_dir", str(sweep_dir.resolve()))
                trials.append(trial)
                overrides.append(override)
            if not trials:
                stopped = "the sampler only suggests parameter sets that already ran"
                break

            try:
                returns = impl.launcher.launch(overrides, initial_job_idx=next_job)
            except BaseException:  # Ctrl-C (or a launcher error): leave no trial of ours RUNNING
                log.warning("Search interrupted: re-queueing the trials that were running")
                self._recover_stale(study)
                raise
            next_job += len(returns)
            failures = sum(not record_result(study, trial, ret) for trial, ret in zip(trials, returns))
            if failures / len(returns) > impl.max_failure_rate:
                stopped = (f"{failures} of {len(returns)} trials in the last batch failed, more than "
                           f"hydra.sweeper.max_failure_rate={impl.max_failure_rate}")
                log.error("Stopping the search: %s", stopped)
                write_report(study, sweep_dir, storage)
                raise RuntimeError(f"Optuna search stopped: {stopped}")

        if stopped:
            log.warning("Stopping the search before n_trials=%d: %s", n_trials, stopped)
        write_report(study, sweep_dir, storage)

    # ------------------------------------------------------------------ helpers
    def _storage(self) -> Any:
        """The storage URL, or None (in memory, no resume); an object node is refused (runner/trust.py)."""
        storage = self.sweeper.storage
        if isinstance(storage, DictConfig):  # preflight refuses this first; never instantiated here either
            print("error: hydra.sweeper.storage must be a URL string, not an object node", file=sys.stderr)
            sys.exit(2)
        if storage is not None and str(storage).startswith("sqlite:///"):
            # Optuna's sqlite URL is relative to the cwd, like Hydra's sweep dir (hydra.job.chdir=false).
            Path(str(storage)[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return storage

    def _reseed(self, sampler: Any, existing: int) -> Any:
        """A seeded sampler, started again, would replay its first suggestions: shift its seed.

        seed + number of trials already in the study: still reproducible from the same history,
        and different on every resume. Unseeded samplers are left as they are.
        """
        import optuna

        cfg = self._sampler_cfg
        # GridSampler needs nothing: it picks grid points no trial in the storage has used.
        if not cfg or cfg.get("seed") is None or isinstance(sampler, optuna.samplers.GridSampler):
            return sampler
        cfg = dict(cfg, seed=int(cfg["seed"]) + existing)
        from runner.trust import HYDRA_TARGETS

        reseeded = instantiate(cfg, _execution_whitelist_=HYDRA_TARGETS["hydra.sweeper.sampler"])
        log.info("Resuming: sampler seed %s -> %s (so it does not repeat its first suggestions)",
                 self._sampler_cfg["seed"], cfg["seed"])
        return reseeded

    def _recover_stale(self, study: Any) -> None:
        """Trials a killed sweeper left RUNNING: record what their job did, else fail and re-queue them.

        A trial counts as left behind when its owner is this host and that process is gone (or it
        has no owner: killed between ask and the first attribute). A RUNNING trial owned by a live
        process or another host is someone else's work on a shared study and is left alone.
        If the job itself ended (its summary.json says completed/diverged/failed) and only the tell
        was lost, its result is recorded; otherwise the trial is failed, marked `retried`, and its
        parameters are enqueued so the next ask runs them again in a new job folder.
        """
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not _owner_gone(t.user_attrs.get("owner"), t.datetime_start):
                continue
            summary = _read_summary(t.user_attrs.get("run_dir"))
            storage = study._storage  # user attributes of a trial we don't hold a Trial object for
            if summary is not None and summary.get("status") in ENDED_STATUSES:
                value = _finite(summary.get("best_val_acc"))
                storage.set_trial_user_attr(t._trial_id, "status", summary["status"])
                if summary.get("error"):
                    storage.set_trial_user_attr(t._trial_id, "error", str(summary["error"]))
                _tell(study, t.number, values=None if value is None else [value],
                      state=TrialState.FAIL if value is None else TrialState.COMPLETE)
                log.info("Trial %d (job %s) had ended (%s) but was left RUNNING: recorded", t.number,
                         t.user_attrs.get("job_num"), summary["status"])
                continue
            storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
            storage.set_trial_user_attr(t._trial_id, "retried", True)
            _tell(study, t.number, state=TrialState.FAIL)
            if t.params:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            log.info("Trial %d (job %s) was left RUNNING by a stopped sweep: failed, its parameters run again",
                     t.number, t.user_attrs.get("job_num"))

    def _next_job_num(self, study: Any, sweep_dir: Path) -> int:
        """One past the highest job number used: numbered folders here and this sweep dir's trials.

        Trials count too because a run killed between ask and launch reserved a number with no
        folder yet; skipping it keeps every trial's job_num pointing at its own folder.
        """
        used = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        here = str(sweep_dir.resolve())
        used += [int(t.user_attrs["job_num"]) for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("sweep_dir") == here and t.user_attrs.get("job_num") is not None]
        return max(used, default=-1) + 1

    def _ask_unseen(self, study: Any, space: dict, fixed_params: dict, fixed_overrides: list,
                    seen: dict, space_size: int | None) -> tuple[Any, list[str]] | None:
        """Ask for a trial whose parameters have not run yet; None if none can be found.

        A repeat is told FAIL with `duplicate_of` (it doesn't count, gets no folder) and asked
        again: after the sampler's own pick, from an unseen point of a discrete space enqueued
        for the next ask, or else from a RandomSampler (a continuous dimension rarely repeats).
        """
        import optuna
        from optuna.trial import TrialState

        sampler = study.sampler
        try:
            for attempt in range(MAX_DUPLICATE_ASKS):
                trial = study.ask()
                trial.set_user_attr("owner", self.owner)
                override = self.sweeper._configure_trials([trial], space, fixed_params, fixed_overrides)[0]
                key = _params_key(trial.params)
                if key not in seen:
                    seen[key] = trial.number
                    return trial, list(override)
                trial.set_user_attr("duplicate_of", seen[key])
                _tell(study, trial.number, state=TrialState.FAIL)
                log.info("Suggestion %s already ran as trial %d: asking again", dict(trial.params), seen[key])
                unseen = _unseen_point(space, seen, space_size, attempt)
                if unseen is not None:
                    study.enqueue_trial(unseen)
                else:
                    study.sampler = optuna.samplers.RandomSampler(seed=len(study.get_trials(deepcopy=False)))
            return None
        finally:
            study.sampler = sampler

    def _check_fixed_overrides(self, study: Any, fixed_params: dict, fixed_overrides: list) -> None:
        """Refuse to add trials run with other fixed settings to a study: one best of mixed trials misleads.

        The first run stores its fixed overrides (e.g. epochs=2) in the study; a later run into the
        same study must repeat them. Settings that change no result (RESULT_NEUTRAL) may differ.
        """
        now = sorted(f"{k}={v}" for k, v in fixed_params.items()) + sorted(fixed_overrides)
        before = study.user_attrs.get("fixed_overrides")
        if before is None:
            study.set_user_attr("fixed_overrides", now)
            return
        differs = _differing_overrides(list(before), now)
        if differs:
            from runner.optuna_report import display_url

            print(f"error: Optuna study '{study.study_name}' ({display_url(self._storage())}) was started with "
                  f"{differs}: its trials would not be comparable; repeat its overrides to extend it, or start a "
                  f"separate study with hydra.sweeper.study_name=<new name>", file=sys.stderr)
            sys.exit(2)

    @staticmethod
    def _resume_command(config: DictConfig) -> str:
        argv = [a for a in sys.argv[1:]]
        sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False)
        if "${now:" in str(sweep.get("dir")) and not any(a.startswith("hydra.sweep.dir=") for a in argv):
            argv.append(f"hydra.sweep.dir={config.hydra.sweep.dir}")
        return shlex.join([Path(sys.executable).name, "-m", "runner", *argv])


# ---------------------------------------------------------------------- plain functions
# Overrides that change no result, so they may differ between the runs of one study.
RESULT_NEUTRAL = ("progress", "tensorboard", "num_workers", "device", "compute.")


def _differing_overrides(before: list[str], now: list[str]) -> str:
    """'epochs=2, this run epochs as in the config' style text for the first fixed override that differs; '' if none."""
    def parse(items: list[str]) -> dict[str, str]:
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in items)
        return {k: v for k, v in pairs if not k.lstrip("+~").startswith(RESULT_NEUTRAL)}

    old, new = parse(before), parse(now)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            was = f"{key}={old[key]}" if key in old else f"{key} as in the config"
            is_ = f"{key}={new[key]}" if key in new else f"{key} as in the config"
            return f"{was} and this run has {is_}"
    return ""


def record_result(study: Any, trial: Any, ret: JobReturn) -> bool:
    """Tell Optuna how a job ended; True if it gave a usable value.

    A value that is None (the job failed, or diverged before its first good epoch), NaN or
    infinite, or a job that raised, becomes a FAIL trial instead of ending the search (the
    plugin raises on the first one with its default max_failure_rate 0, and a NaN told as
    COMPLETE makes Optuna raise). A diverged job with a best epoch before the NaN is COMPLETE
    with that value: a real, if poor, result the sampler should learn from. The job's own
    status and error (summary.json) go into the trial's user attributes either way.
    """
    from optuna.trial import TrialState

    run_dir = _job_dir(ret) or trial.user_attrs.get("run_dir")
    if run_dir:
        trial.set_user_attr("run_dir", str(Path(run_dir).resolve()))
    summary = _read_summary(run_dir) or {}
    if ret.status == JobStatus.COMPLETED:
        value, error = _finite(ret._return_value), summary.get("error")
        status = summary.get("status", "completed" if value is not None else "failed")
    else:  # the task raised (main() catches its own errors in a sweep, so rarely)
        value, error = None, f"{type(ret._return_value).__name__}: {ret._return_value}"
        status = summary.get("status", "failed")
    trial.set_user_attr("status", status)
    if error:
        trial.set_user_attr("error", str(error)[:500])
    if value is None:
        _tell(study, trial.number, state=TrialState.FAIL)
        log.warning("Trial %d (job %s) %s: recorded as failed, the search goes on%s", trial.number,
                    trial.user_attrs.get("job_num"), status, f" ({error})" if error else "")
        return False
    _tell(study, trial.number, state=TrialState.COMPLETE, values=[value])
    log.info("Trial %d (job %s): %s, value %.4g, params %s", trial.number, trial.user_attrs.get("job_num"),
             status, value, dict(trial.params))
    return True


def _is_grid(sampler: Any) -> bool:
    import optuna

    return (isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler)


def _tell(study: Any, number: int, state: Any, values: list[float] | None = None) -> None:
    """study.tell, tolerating GridSampler's study.stop() once the grid is used up (as the plugin does)."""
    try:
        study.tell(number, state=state, values=values)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def _tally(study: Any) -> tuple[int, int]:
    """(trials counted towards n_trials, trials RUNNING in another process); see the module docstring."""
    from optuna.trial import TrialState

    counted = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            running += 1
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                t.state == TrialState.FAIL and not t.user_attrs.get("retried") and "duplicate_of" not in t.user_attrs):
            counted += 1
    return counted, running


def _seen_params(study: Any) -> dict[tuple, int]:
    """Parameter sets that ran or are running -> a trial number (re-queued and skipped trials aside)."""
    from optuna.trial import TrialState

    seen: dict[tuple, int] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING or t.user_attrs.get("retried") or "duplicate_of" in t.user_attrs:
            continue
        if t.params:
            seen.setdefault(_params_key(t.params), t.number)
    return seen


def _params_key(params: dict[str, Any]) -> tuple:
    """A parameter set, comparable across trials (floats to 12 digits: a stepped float range's
    points as Optuna suggests them and as _space_points computes them may differ in the last bit)."""
    return tuple(sorted((k, f"{v:.12g}" if isinstance(v, float) else repr(v)) for k, v in params.items()))


def _space_points(distribution: Any) -> list | None:
    """Every value of a discrete distribution, None for a continuous one."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, 1 if distribution.log else distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        n = int(round((distribution.high - distribution.low) / distribution.step))
        return [distribution.low + i * distribution.step for i in range(n + 1)]
    return None


def _space_size(space: dict) -> int | None:
    """Points in a search space of discrete dimensions only; None if any dimension is continuous."""
    sizes = [_space_points(d) for d in space.values()]
    if any(s is None for s in sizes):  # an empty space has one point: the search runs once
        return None
    return math.prod(len(s) for s in sizes)


def _unseen_point(space: dict, seen: dict, space_size: int | None, attempt: int) -> dict | None:
    """A random not-yet-run point of a discrete space small enough to enumerate, else None."""
    if space_size is None or space_size > MAX_ENUMERATED_SPACE:
        return None
    names = sorted(space)
    points = [dict(zip(names, values)) for values in itertools.product(*(_space_points(space[n]) for n in names))]
    unseen = [p for p in points if _params_key(p) not in seen]
    return random.Random(len(seen) * 1000 + attempt).choice(unseen) if unseen else None


def _owner_gone(owner: Any, started: datetime.datetime | None) -> bool:
    """True when `owner` (host:pid) is a process of this host that no longer runs.

    A trial with no owner yet was killed between ask and its first attribute, or is being set
    up right now by another process on a shared study: it counts as gone once it is older than
    OWNERLESS_GRACE_S (a live sweeper sets the owner milliseconds after asking).
    """
    if not owner:
        if started is None:
            return True
        age = datetime.datetime.now(started.tzinfo) - started
        return age.total_seconds() > OWNERLESS_GRACE_S
    host, _, pid = str(owner).rpartition(":")
    if host != socket.gethostname():
        return False
    if not pid.isdigit() or int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _job_dir(ret: JobReturn) -> str | None:
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except Exception:
        return None


def _read_summary(run_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    if not run_dir:
        return None
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
