"""Asking for trials: the part of the sweeper's loop that talks to the study before a job runs.

A mixin of ResumableOptunaSweeper (runner/search/sweeper.py), which supplies `self.sweeper` (the
plugin's implementation: search space to overrides), `self.owner`, `self._sampler_cfg`,
`self._heartbeats` and `self._next_job`. Here: the next trial and its job folder, a parameter set
that already ran (here or in another worker) asked again, a seeded sampler re-seeded, and
trials a stopped worker left RUNNING recovered.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from runner import hydra_adapter
from runner.search.space import (_params_key, _seen_params, _surplus, _taken_elsewhere, _tally,
                                 _unseen_point)
from runner.search.pruning import STUDY_ENV, TRIAL_ENV
from runner.search.storage import claim_job_dir, heartbeat_thread, stale_trial_ids
from runner.search.trials import _owner_gone, _tell, recover_trial

log = logging.getLogger("runner.search.sweeper")

# Suggestions in a row that may repeat a parameter set before the search is declared exhausted.
MAX_DUPLICATE_ASKS = 20


@dataclass
class Search:
    """A search with its study open: what the loop asks for, where its jobs go, how many trials it wants."""

    study: Any
    url: Any  # the storage, as logs and best.json show it
    sweep_dir: Path
    space: dict[str, Any]  # name -> Optuna distribution
    fixed_params: dict[str, Any]
    fixed_overrides: list[str]
    space_size: int | None  # points of a discrete space (None: not countable)
    n_trials: int


class TrialAsking:
    """Methods of ResumableOptunaSweeper that ask for trials and recover stale ones."""

    sweeper: Any
    owner: str
    _sampler_cfg: dict | None
    _heartbeats: dict[int, Any]
    _next_job: int

    def _start_trial(self, search: Search) -> tuple[Any, list[str], int] | str | None:
        """Ask for the next trial and give it a job folder: (trial, overrides, job number).

        None when the study is full (counting the trials running anywhere), or a reason to stop.
        """
        from optuna.trial import TrialState

        study, n_trials, space_size, sweep_dir = search.study, search.n_trials, search.space_size, search.sweep_dir
        counted, running = _tally(study)
        if counted + running >= n_trials:
            return None
        seen = _seen_params(study)
        if space_size is not None and len(seen) >= space_size:
            return f"all {space_size} points of the search space have run"
        asked = self._ask_unseen(search, seen)
        if asked is None:
            return "the sampler only suggests parameter sets that already ran"
        trial, override = asked
        if _surplus(study, trial.number, n_trials):  # other workers filled the study while we asked
            trial.set_user_attr("surplus", True)
            self._stop_heartbeat(trial.number)
            _tell(study, trial.number, state=TrialState.FAIL)
            return None
        job_num, run_dir = claim_job_dir(sweep_dir, self._next_job)
        self._next_job = job_num + 1
        trial.set_user_attr("job_num", job_num)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("sweep_dir", str(sweep_dir.resolve()))
        # The job finds its trial by these (runner/search/pruning.py); the study name resolved here, where it was.
        override += [f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
                     f"++hydra.job.env_set.{STUDY_ENV}={_override_value(study.study_name)}"]
        return trial, override, job_num

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
        from runner.trust.allowed import HYDRA_TARGETS

        reseeded = instantiate(cfg, _execution_whitelist_=HYDRA_TARGETS["hydra.sweeper.sampler"])
        log.info("Sampler seed %s -> %s (so it does not repeat suggestions already made)",
                 self._sampler_cfg["seed"], cfg["seed"])
        return reseeded

    def _recover_stale(self, study: Any, skip: set[int] = frozenset()) -> None:
        """Trials a stopped worker left RUNNING: record what their job did, else fail and re-queue them.

        A trial counts as left behind when its heartbeat stopped (any machine, with heartbeats on),
        or its owner is this host and that process is gone (or it has no owner: killed between ask
        and the first attribute). Other RUNNING trials are someone else's work and are left alone;
        `skip` holds this process's own running trials.
        If the job itself ended (its summary.json says so) and only the tell was lost, its result
        is recorded; otherwise the trial is failed, marked `retried`, its folder's summary.json
        says `interrupted`, and its parameters are enqueued so the next ask runs them again in a
        new job folder. Of two workers recovering the same trial, only the one whose tell lands
        re-queues it, so it runs again once.
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        stale = stale_trial_ids(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in skip or (t._trial_id not in stale and not _owner_gone(t.user_attrs.get("owner"),
                                                                                 t.datetime_start)):
                continue
            try:
                recover_trial(study, t)
            except (UpdateFinishedTrialError, ValueError):
                log.info("Trial %d was recovered by another worker", t.number)
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

    def _ask_unseen(self, search: Search, seen: dict) -> tuple[Any, list[str]] | None:
        """Ask for a trial whose parameters have not run yet; None if none can be found.

        A repeat is told FAIL with `duplicate_of` (it doesn't count, gets no folder) and asked
        again: after the sampler's own pick, from an unseen point of a discrete space enqueued
        for the next ask, or else from a RandomSampler (a continuous dimension rarely repeats).
        A repeat of a trial another worker asked at the same moment also re-seeds this worker's
        sampler for good: two workers with the same seed would otherwise suggest in lockstep.
        """
        import optuna
        from optuna.trial import TrialState

        study, space = search.study, search.space
        sampler = study.sampler
        try:
            for attempt in range(MAX_DUPLICATE_ASKS):
                trial = study.ask()
                self._heartbeats[trial.number] = heartbeat_thread(study, trial._trial_id)
                trial.set_user_attr("owner", self.owner)
                override = hydra_adapter.trial_overrides(self.sweeper, trial, search.fixed_params,
                                                         search.fixed_overrides, space)
                key = _params_key(trial.params)
                twin = seen.get(key)
                if twin is None:
                    trial.set_user_attr("params_set", True)
                    twin = _taken_elsewhere(study, trial)
                    if twin is not None:  # the owner makes the new seed differ from the other worker's
                        sampler = self._reseed(sampler, len(study.get_trials(deepcopy=False)) + zlib.crc32(
                            self.owner.encode()) % 1_000_000)
                if twin is None:
                    seen[key] = trial.number
                    return trial, list(override)
                trial.set_user_attr("duplicate_of", twin)
                self._stop_heartbeat(trial.number)
                _tell(study, trial.number, state=TrialState.FAIL)
                log.info("Suggestion %s already ran as trial %d: asking again", dict(trial.params), twin)
                unseen = _unseen_point(space, seen, search.space_size, attempt)
                if unseen is not None:
                    study.enqueue_trial(unseen)
                else:
                    study.sampler = optuna.samplers.RandomSampler(seed=len(study.get_trials(deepcopy=False)))
            return None
        finally:
            study.sampler = sampler


def _override_value(text: str) -> str:
    """`text` as a Hydra override value: as it is when plain, else single-quoted."""
    if text.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
