"""One training run, top to bottom: config -> data set -> model -> training loop -> run folder.

`train(cfg, run_dir)` is the whole of it; the entry point (`runner/__main__.py`) only gives it
Hydra's config and output folder. The data set stays resident as uint8 tensors (on the GPU when
training there), augmentation and normalisation run per batch on tensors, and the loop reads
losses and accuracies back once per epoch, never per step.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from hydra.utils import execution_whitelist
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from data.augment import Normalize
from data.base import ImageDataset
from data.splits import Split, open_splits
from models import count_model_params
from models.shape_check import check_image_size
from runner.attacks import build_adversary
from runner.checkpoint import for_weights, load_model_state
from runner.compute import compile_model, configure_compute, to_model_input
from runner.build import build, build_scheduler  # noqa: F401 (build_scheduler also imported from here)
from runner.capture import plan_step
from runner.config import check_config, switch
from runner.gpu_lease import JobGpu, gpu_fields
from runner.resume import apply_new_lr, resume_from_checkpoint
from runner.step import SingleLearner, Totals, train_step
from runner.trial_record import TrialRecord
from runner.trust import run_whitelist

log = logging.getLogger("runner")

EVAL_BATCH = 1024  # validation batch size: it changes no result, only speed


# ---------------------------------------------------------------- set-up helpers
def seed_everything(seed: int | None) -> None:
    """Seed every generator we draw from; `seed=0` is a seed like any other (None: don't seed)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- one pass each way
def train_one_epoch(model, data, augment, normalize, loss_fn, optimizer, scheduler, step_per_batch: bool,
                    amp_dtype, channels_last: bool, grad_clip: float | None, progress,
                    adversary=None, captured=None) -> dict[str, float]:
    if captured is not None:  # runner/capture.py: this run's step replayed as a CUDA graph
        return captured.train_epoch(progress)
    model.train()
    learner = SingleLearner(model, loss_fn, optimizer, scheduler if step_per_batch else None, grad_clip)
    totals = Totals(next(model.parameters()).device)
    for x, y in data:
        x = augment(x)
        if adversary is not None:  # train on the batch's attack instead (conf/adversary/)
            x = adversary.perturb(model, x, y, normalize)
        x = to_model_input(x, normalize, channels_last)
        train_step(learner, x, y, totals, amp_dtype)  # runner/step.py: the one step, also captured and fused
        learner.after_step()
        totals.seen += len(y)
        progress.update(1)
    return totals.rows()[0]


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, normalize: nn.Module, amp_dtype: torch.dtype | None = None,
             channels_last: bool = False) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy (percent) over a whole split."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device, dtype=torch.long)
    top5 = torch.zeros((), device=device, dtype=torch.long)
    for x, y in split.batches(EVAL_BATCH, shuffle=False, device=device):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(to_model_input(x, normalize, channels_last)).float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (best[:, 0] == y).sum()
        top5 += (best == y[:, None]).any(dim=1).sum()
    n = len(split.labels)
    return {"val_loss": loss_sum.item() / n, "val_acc": 100.0 * top1.item() / n, "val_top5": 100.0 * top5.item() / n}


# ---------------------------------------------------------------- the run
def load_data(cfg: DictConfig, device: torch.device) -> tuple[ImageDataset, dict[str, Split]]:
    """Instantiate the data set config and open its splits; fill in a class count left as null."""
    dataset = build(cfg.dataset, "dataset")
    splits = open_splits(dataset, str(cfg.compute.data_path), device, cfg.num_workers,
                         switch(cfg.compute.data_on_device))
    if cfg.dataset.num_classes is None:
        with open_dict(cfg):
            cfg.dataset.num_classes = dataset.num_classes
    return dataset, splits


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
    `pruned` (an Optuna trial's pruner, runner/pruning.py).
    `typed`: the overrides the user typed (Hydra's task overrides); with `resume=` they are laid
    over the checkpoint's recipe, which becomes `cfg` (runner/resume.py). None: `cfg` is the request.
    `gpu_leases`: in a sweep whose trials run side by side, the folder where a device=auto run
    leases a GPU slot of its own for as long as it trains (runner/gpu_lease.py). None: a run alone.
    """
    # A resume is checked whole (checkpoint, recipe, restored state) before the run writes anything:
    # a refused resume= into the checkpoint's own folder must leave it as it was.
    state = resume_from_checkpoint(cfg, typed) if cfg.get("resume") else None
    # Every _target_ is checked against runner/trust.py before anything is built (a ConfigError here
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
        amp_dtype = configure_compute(cfg.compute, device, parallel_jobs)
        check_image_size(cfg.model, cfg.dataset.channels, cfg.dataset.image_size)  # before any data is decoded
        channels_last = bool(cfg.compute.channels_last)
        dataset, splits = load_data(cfg, device)
        model = build(for_weights(cfg.model) if state else cfg.model, "model").to(device)  # weights: the checkpoint's
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        summary.update(params_m=count_model_params(model), device=str(device), **gpu_fields(device))
        optimizer = build(cfg.optimizer, "optimizer", params=[p for p in model.parameters() if p.requires_grad])
        steps_per_epoch = math.ceil(len(splits["train"].labels) / cfg.batch_size)
        scheduler, interval = build_scheduler(cfg.scheduler, optimizer, steps_per_epoch)
        augment = build(cfg.augmentation, "augmentation").to(device)
        normalize = Normalize(dataset.mean, dataset.std).to(device)
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
            train_model, summary["compile_s"] = compile_model(model, splits, augment, normalize, loss_fn,
                                                              amp_dtype, channels_last, cfg.batch_size)
        captured = plan_step(cfg, device, splits["train"], model, loss_fn, optimizer, scheduler, interval, augment,
                             normalize, amp_dtype, channels_last, adversary, summary)  # runner/capture.py, or None
        plain_cfg = OmegaConf.to_container(cfg, resolve=True)
        record.start(plain_cfg)
        log.info("%s on %s: %d train / %d val images, %.6fM parameters, %s", cfg.model._target_.split(".")[-1],
                 device, len(splits["train"].labels), len(splits["val"].labels), summary["params_m"], run_dir)

        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            lr = float(optimizer.param_groups[0]["lr"])  # a tensor on the captured path
            t0 = time.perf_counter()
            with progress_bar(cfg, steps_per_epoch, epoch) as bar:
                data = splits["train"].batches(cfg.batch_size, shuffle=True, device=device)
                row = train_one_epoch(train_model, data, augment, normalize, loss_fn, optimizer, scheduler,
                                      interval == "step", amp_dtype, channels_last, cfg.grad_clip, bar, adversary,
                                      captured)
            t1 = time.perf_counter()
            row.update(evaluate(train_model, splits["val"], normalize, amp_dtype, channels_last))
            if adversary is not None:
                row["val_robust_acc"] = adversary.robust_accuracy(train_model, splits["val"], normalize)
            t2 = time.perf_counter()
            if interval == "epoch":
                scheduler.step()
            rng = {"torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
            if record.end_epoch(epoch, row, lr, t1 - t0, t2 - t1, model, optimizer, scheduler, rng,
                                adversary) == "diverged":
                break
            if epoch_end is not None and epoch_end(epoch, row) == "stop":
                summary["status"] = "pruned"
                break
        else:
            summary["status"] = "completed"
        return summary
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        raise
    except BaseException as e:
        record.failed(e)
        raise
    finally:
        record.close()
