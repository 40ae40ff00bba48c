"""One training run, top to bottom: config -> data set -> model -> training loop -> run folder.

`train(cfg, run_dir)` is the whole of it; the entry point (`runner/__main__.py`) only gives it
Hydra's config and output folder. The data set stays resident as uint8 tensors (on the GPU when
training there), augmentation and normalisation run per batch on tensors, and the loop reads
losses and accuracies back once per epoch, never per step.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from hydra.utils import execution_whitelist
from omegaconf import DictConfig, OmegaConf
from torch import nn

from models import count_model_params
from runner.capture.plan import plan_step
from runner.config.schema import check_config, switch
from runner.record.checkpoint import for_weights, load_model_state
from runner.record.run_folder import Status
from runner.record.trial_record import Trained, TrialRecord
from runner.run.attacks import build_adversary
from runner.run.build import build
from runner.run.epoch import evaluate, train_epoch
from runner.run.gpu_lease import JobGpu, gpu_fields
from runner.run.resume import apply_new_lr, resume_from_checkpoint
from runner.run.setup import build_optimization, compile_model, open_data, seed_everything
from runner.run.step import SingleLearner
from runner.trust.targets import run_whitelist

log = logging.getLogger("runner")


def progress_bar(cfg: DictConfig, total: int, epoch: int):
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if switch(cfg.progress) == "auto" else switch(cfg.progress) == "true"
    return tqdm(total=total, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not show, mininterval=0.5)


def train(cfg: DictConfig, run_dir: Path, parallel_jobs: int = 1,
          epoch_end: Callable[[int, dict[str, float]], str | None] | None = None,
          typed: list[str] | None = None, gpu_leases: Path | None = None) -> dict[str, Any]:
    """Train one model as `cfg` says, writing everything into `run_dir`; return the summary.

    `parallel_jobs`: how many trials share this machine right now (a joblib launcher's n_jobs),
    so compute.threads=auto can share the cores among them.
    `epoch_end(epoch, row)`: called after each epoch is saved; returning "stop" ends the run as
    `pruned` (an Optuna trial's pruner, runner/search/pruning.py).
    `typed`: the overrides the user typed (Hydra's task overrides); with `resume=` they are laid
    over the checkpoint's recipe, which becomes `cfg` (runner/run/resume.py). None: `cfg` is the request.
    `gpu_leases`: in a sweep whose trials run side by side, the folder where a device=auto run
    leases a GPU slot of its own for as long as it trains (runner/run/gpu_lease.py). None: a run alone.
    """
    # A resume is checked whole (checkpoint, recipe, restored state) before the run writes anything:
    # a refused resume= into the checkpoint's own folder must leave it as it was.
    state = resume_from_checkpoint(cfg, typed) if cfg.get("resume") else None
    # Every _target_ is checked against runner/trust/targets.py before anything is built (a ConfigError here
    # leaves no run folder contents); Hydra then allows exactly those classes, nothing inherited.
    # The GPU lease, if one is taken, is released after _train returns: its tensors are gone by then.
    with execution_whitelist(run_whitelist(cfg), reset=True), JobGpu(gpu_leases) as gpu:
        return _train(cfg, run_dir, parallel_jobs, epoch_end, state, gpu)


def _train(cfg: DictConfig, run_dir: Path, parallel_jobs: int, epoch_end: Any = None,
           state: dict[str, Any] | None = None, gpu: JobGpu | None = None) -> dict[str, Any]:
    record = TrialRecord(cfg, run_dir)  # history, summary, checkpoints: shared with runner/fused/
    summary = record.summary
    try:
        # config -> device -> data set -> model -> optimiser
        check_config(cfg)
        seed_everything(cfg.seed)
        device = (gpu or JobGpu(None)).pick(cfg)  # device=auto in a parallel sweep: a GPU slot of its own
        data = open_data(cfg, device, parallel_jobs)  # runner/run/setup.py, shared with a fused group and eval
        model = build(for_weights(cfg.model) if state else cfg.model, "model").to(device)  # weights: the checkpoint's
        if data.channels_last:
            model = model.to(memory_format=torch.channels_last)
        summary.update(params_m=count_model_params(model), device=str(device), **gpu_fields(device))
        steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
        optimization = build_optimization(cfg, model, steps_per_epoch)
        optimizer, scheduler = optimization.optimizer, optimization.scheduler
        adversary = build_adversary(cfg.get("adversary"))
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        start_epoch = 0

        if state is not None:  # checked by resume_from_checkpoint: these loads succeed
            load_model_state(model, state, key="resume")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            apply_new_lr(cfg, state, optimizer, scheduler)
            start_epoch = record.resume(state)
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            log.info("resuming %s from epoch %d (best val acc so far %.2f)", cfg.resume, start_epoch + 1, record.best_acc)

        train_model = model
        if cfg.compute.compile:
            train_model, summary["compile_s"] = compile_model(model, data, loss_fn, cfg.batch_size)
        learner = SingleLearner(train_model, loss_fn, optimization, cfg.grad_clip, data.amp_dtype)
        source = plan_step(cfg, data, learner, adversary, summary)  # runner/capture/plan.py: captured or eager batches
        record.start(OmegaConf.to_container(cfg, resolve=True))
        splits = data.splits
        log.info("%s on %s: %d train / %d val images, %.6fM parameters, %s", cfg.model._target_.split(".")[-1],
                 device, len(splits["train"].labels), len(splits["val"].labels), summary["params_m"], run_dir)

        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            lr = float(optimizer.param_groups[0]["lr"])  # a tensor on the captured path
            t0 = time.perf_counter()
            with progress_bar(cfg, steps_per_epoch, epoch) as bar:
                row = train_epoch(learner, source, bar)[0]  # runner/run/epoch.py: the one epoch loop
            t1 = time.perf_counter()
            row.update(evaluate(train_model, splits["val"], data.normalize, data.amp_dtype, data.channels_last))
            if adversary is not None:
                row["val_robust_acc"] = adversary.robust_accuracy(train_model, splits["val"], data.normalize)
            t2 = time.perf_counter()
            if optimization.interval == "epoch":
                scheduler.step()
            rng = {"torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
            row.update(lr=lr, train_s=t1 - t0, val_s=t2 - t1)
            if record.end_epoch(epoch, row, Trained(model, optimizer, scheduler, rng)) == Status.DIVERGED:
                break
            if epoch_end is not None and epoch_end(epoch, row) == "stop":
                summary["status"] = Status.PRUNED
                break
        else:
            summary["status"] = Status.COMPLETED
        return summary
    except KeyboardInterrupt:
        summary["status"] = Status.INTERRUPTED
        raise
    except BaseException as e:
        record.failed(e)
        raise
    finally:
        record.close()
