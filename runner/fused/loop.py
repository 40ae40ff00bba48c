"""The fused loop: a group of trials (same model, data, batch size) trained as one, epoch by epoch.

The set-up is the single run's (runner/run/train.py: seed, model, optimizer, scheduler, per trial),
the step is one vmapped forward and one backward for all K trials, then each trial's own
optimizer and scheduler step; everything recorded per epoch goes through the same
`TrialRecord` as a single run, so each trial's folder is a single run's folder.
What may differ between trials: lr, optimizer momentum/weight decay/betas, label smoothing,
grad clip, seed and epochs (runner/fused/groups.py checks the rest is equal).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import execution_whitelist
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from models import count_model_params
from runner.config.schema import check_config
from runner.fused.capture import plan_fused_step
from runner.fused.learner import FusedLearner
from runner.fused.prefix import prefix_leaders
from runner.fused.rng import TrialRng
from runner.fused.stack import NotFusible, OwnStorage, StackedModels, fusible
from runner.record.run_folder import Status
from runner.record.trial_record import Trained, TrialRecord
from runner.run.build import build
from runner.run.compute import pick_device
from runner.run.epoch import evaluate, train_epoch
from runner.run.gpu_lease import gpu_fields
from runner.run.setup import RunData, build_optimization, open_data, seed_everything
from runner.search.pruning import STOP, EpochEnd
from runner.trust.targets import run_whitelist

log = logging.getLogger("runner")


class Trial:
    """One trial of the group: its config, model (views of the stack), optimizer, scheduler, RNG, record."""

    def __init__(self, cfg: DictConfig, record: TrialRecord, model: nn.Module, rng: TrialRng,
                 steps_per_epoch: int, epoch_end: EpochEnd | None = None) -> None:
        self.cfg, self.record, self.model, self.rng = cfg, record, model, rng
        self.epoch_end = epoch_end  # the trial's pruner hook (runner/search/pruning.py), as train()'s epoch_end
        optimization = build_optimization(cfg, model, steps_per_epoch)  # as a single run's (runner/run/setup.py)
        self.optimizer, self.scheduler, self.interval = optimization.optimizer, optimization.scheduler, optimization.interval
        self.label_smoothing = float(cfg.label_smoothing)
        self.grad_clip = cfg.grad_clip
        self.followers: list[Trial] = []  # shorter trials that record this one's first epochs (prefix.py)


def train_fused(cfgs: list[DictConfig], run_dirs: list[Path],
                epoch_ends: list[EpochEnd | None] | None = None, parallel_jobs: int = 1) -> list[dict[str, Any]]:
    """Train the trials `cfgs` (one fusible group) together, each into its run folder; return their summaries.

    `epoch_ends[k]`: trial k's pruner hook (or None), called after each of its epochs as in train();
    a hook with an `observe(epoch, row)` method is first shown every trial's row of the epoch that
    trained on (a job's replicates decide together on their mean, runner/sweep/replicates.py).
    `parallel_jobs`: as train()'s (how many jobs share the machine, for compute.threads=auto).
    """
    with execution_whitelist(run_whitelist(cfgs[0]), reset=True):
        return _train_fused(cfgs, run_dirs, epoch_ends or [None] * len(cfgs), parallel_jobs)


@dataclass
class Group:
    """A fused group set up: its data, the stack of its leading trials' models, and those trials."""

    data: RunData
    stack: StackedModels
    trials: list[Trial]  # each with its followers (shorter trials sharing its first epochs)


def _train_fused(cfgs: list[DictConfig], run_dirs: list[Path],
                 epoch_ends: list[EpochEnd | None], parallel_jobs: int = 1) -> list[dict[str, Any]]:
    records = [TrialRecord(cfg, run_dir, label=f"run {run_dir.name}: ") for cfg, run_dir in zip(cfgs, run_dirs)]
    try:
        _run_epochs(_set_up(cfgs, records, epoch_ends, parallel_jobs))
    except KeyboardInterrupt:
        for record in records:
            if record.summary["status"] == Status.RUNNING:
                record.summary["status"] = Status.INTERRUPTED
        raise
    except BaseException as e:
        for record in records:
            if record.summary["status"] == Status.RUNNING:
                record.failed(e)
        raise
    finally:
        summaries = [record.close() for record in records]
    return summaries


def _set_up(cfgs: list[DictConfig], records: list[TrialRecord], epoch_ends: list[EpochEnd | None],
            parallel_jobs: int = 1) -> Group:
    """The single run's set-up once for what the trials share, and per trial for what they don't."""
    first = cfgs[0]
    for cfg in cfgs:
        check_config(cfg)
    device = pick_device(str(first.device))
    data = open_data(first, device, parallel_jobs)  # runner/run/setup.py; draws nothing from torch's generator
    steps_per_epoch = data.steps_per_epoch(first.batch_size)
    models, rngs = [], []
    for cfg in cfgs:
        with open_dict(cfg):
            cfg.dataset.num_classes = first.dataset.num_classes
        seed_everything(cfg.seed)  # exactly as runner/run/train.py: seed, then build the model
        models.append(build(cfg.model, "model").to(device))
        rngs.append(TrialRng(device))  # the stream as the single run leaves it after the model
    reason = fusible(models[0])
    if reason is not None:
        raise NotFusible(f"model {first.model._target_} can't be fused: {reason}")
    all_trials = [Trial(cfg, record, model, rng, steps_per_epoch, epoch_end)
                  for cfg, record, model, rng, epoch_end in zip(cfgs, records, models, rngs, epoch_ends)]
    # A trial with a pruner hook shares no trajectory: a pruned leader would cut off its followers
    # (their own pruners might have let them go on), and a follower's report would be the leader's.
    unhooked = [i for i, hook in enumerate(epoch_ends) if hook is None]
    followers = {unhooked[f]: unhooked[lead] for f, lead in prefix_leaders([cfgs[i] for i in unhooked]).items()}
    for follower, leader in followers.items():
        all_trials[leader].followers.append(all_trials[follower])
    trials = [t for i, t in enumerate(all_trials) if i not in followers]
    stack = StackedModels([t.model for t in trials], channels_last=data.channels_last)
    for trial in all_trials:
        trial.record.summary.update(params_m=count_model_params(trial.model), device=str(device),
                                    step_path="fused-eager", capture_s=None, **gpu_fields(device))
        trial.record.start(OmegaConf.to_container(trial.cfg, resolve=True))
    splits = data.splits
    log.info("fused %d trials (%d more sharing their epochs) of %s on %s: %d train / %d val images, %s",
             len(trials), len(followers),
             first.model._target_.split(".")[-1], device, len(splits["train"].labels), len(splits["val"].labels),
             ", ".join(str(r.folder.path) for r in records))
    return Group(data, stack, trials)


def _run_epochs(group: Group) -> None:
    data, stack, active = group.data, group.stack, list(group.trials)
    source = plan_fused_step(data, stack, active)  # runner/fused/capture.py: captured or eager batches
    learner = FusedLearner(stack, active, data.amp_dtype)
    for epoch in range(1, max(t.cfg.epochs for t in active) + 1):
        lrs = [float(t.optimizer.param_groups[0]["lr"]) for t in active]  # a tensor on the captured path
        t0 = time.perf_counter()
        rows = train_epoch(learner, source)  # runner/run/epoch.py: the one epoch loop, K trials wide
        train_s = (time.perf_counter() - t0) / len(active)  # each trial's share of the fused epoch
        recorded = []  # (trial, row) of each trial that did not diverge this epoch
        for trial, row, lr in zip(active, rows, lrs):
            t1 = time.perf_counter()
            row.update(evaluate(trial.model, data.splits["val"], data.normalize, data.amp_dtype))
            row.update(lr=lr, train_s=train_s, val_s=time.perf_counter() - t1)
            if trial.interval == "epoch":
                trial.scheduler.step()
            # saves this trial's tensors only, not the whole stack's
            trained = Trained(OwnStorage(trial.model), OwnStorage(trial.optimizer), trial.scheduler, trial.rng.state)
            outcome = trial.record.end_epoch(epoch, row, trained)
            for follower in (f for f in trial.followers if epoch <= f.cfg.epochs):  # the same epoch, its folder
                if follower.record.end_epoch(epoch, dict(row), trained) is None and epoch == follower.cfg.epochs:
                    follower.record.summary["status"] = Status.COMPLETED
            if outcome is None:
                recorded.append((trial, row))
        for trial, row in recorded:  # every row is in before any hook decides (train_fused's docstring)
            getattr(trial.epoch_end, "observe", lambda *_: None)(epoch, row)
        keep = [trial for trial, row in recorded if _trial_goes_on(trial, epoch, row)]
        if not keep:
            return
        if len(keep) < len(active):  # a diverged, pruned or finished trial leaves the stack; the others go on
            stack.keep([active.index(t) for t in keep])
            active = keep
            learner = FusedLearner(stack, active, data.amp_dtype)


def _trial_goes_on(trial: Trial, epoch: int, row: dict[str, float]) -> bool:
    """Ask the trial's pruner hook, as train() does; False (with its status set) if this epoch ends the trial.

    A hook that raises (its study's storage gone, say) fails its own trial, as it would fail its
    single run, not the whole group: the others train on.
    """
    if trial.epoch_end is not None:
        try:
            stop = trial.epoch_end(epoch, row) == STOP
        except Exception as e:
            log.exception("run %s failed in its pruner hook: %s", trial.record.folder.path, e)
            trial.record.failed(e)
            return False
        if stop:
            trial.record.summary["status"] = Status.PRUNED  # as a single run; it leaves the stack
            return False
    if epoch == trial.cfg.epochs:
        trial.record.summary["status"] = Status.COMPLETED
        return False
    return True
