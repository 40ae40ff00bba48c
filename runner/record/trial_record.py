"""A run's bookkeeping, epoch by epoch: history rows, best epoch, divergence, the files it leaves.

The one training loop (runner/run/train.py) and the fused loop (runner/fused/loop.py, K trials
trained as one) both hand each finished epoch to a `TrialRecord`, so metrics.csv,
summary.json, the checkpoints and curves.png are written by the same code for both: a fused
trial's folder cannot drift from a single run's.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig

from runner.record.checkpoint import save_checkpoint
from runner.record.run_folder import RunFolder, Status
from runner.record.trackers import Trackers, tensorboard_wanted
from runner.run.attacks import best_robust_acc
from runner.sweep.job_records import launched_as

log = logging.getLogger("runner")


class Trained(NamedTuple):
    """What a checkpoint keeps of the training besides the history: model, optimizer, scheduler, RNG."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    rng: dict[str, Any]


class TrialRecord:
    """History, summary and best-so-far of one run, written into its `RunFolder` as it goes."""

    def __init__(self, cfg: DictConfig, run_dir: Path, label: str = "") -> None:
        self.cfg = cfg
        self.label = label  # before each log line: which of a fused group's trials it is about
        self.started = time.perf_counter()
        self.folder = RunFolder(run_dir, tensorboard=tensorboard_wanted(cfg))
        self.trackers = Trackers(cfg, run_dir, label)  # MLflow, W&B: copies of what the folder holds
        self.history: list[dict[str, float]] = []
        self.summary: dict[str, Any] = {
            "status": Status.RUNNING, "best_val_acc": None, "best_epoch": None, "epochs_done": 0, "params_m": None,
            "train_s": 0.0, "val_s": 0.0, "wall_s": None, "compile_s": 0.0, "device": None,
            "gpu": None, "gpu_physical": None, "resumed_from": cfg.get("resume"), "error": None, "started_at": time.time()}
        self.best_acc, self.best_epoch = -math.inf, None
        self.plain_cfg: dict[str, Any] | None = None

    def resume(self, state: dict[str, Any]) -> int:
        """Carry a checkpoint's history and best on; return the epoch it ended at."""
        self.history = list(state["history"])
        self.best_acc, self.best_epoch = state["best_val_acc"], state["best_epoch"]
        return int(state["epoch"])

    def start(self, plain_cfg: dict[str, Any]) -> None:
        self.plain_cfg = plain_cfg
        self.summary.update(launched_as(self.folder.path))  # the repeat command's source (runner/results/best_run.py)
        self.folder.write_config(plain_cfg)
        self.trackers.start(plain_cfg)
        self.trackers.log_history(self.history)  # a resumed run's earlier epochs

    def end_epoch(self, epoch: int, row: dict[str, float], trained: Trained) -> str | None:
        """Record one epoch (row, log line, metrics, checkpoints); return Status.DIVERGED if training diverged.

        `row`: the epoch's metrics, with its lr, train_s and val_s.
        """
        history, summary, cfg = self.history, self.summary, self.cfg
        history.append({"epoch": epoch, **row})
        train_s, val_s = row["train_s"], row["val_s"]
        summary["epochs_done"] = epoch
        summary["train_s"] = sum(h["train_s"] for h in history)
        summary["val_s"] = sum(h["val_s"] for h in history)
        log.info("%sepoch %d/%d  train loss %.4f acc %.2f  val loss %.4f acc %.2f top5 %.2f  (%.1fs + %.1fs)",
                 self.label, epoch, cfg.epochs, row["train_loss"], row["train_acc"], row["val_loss"], row["val_acc"],
                 row["val_top5"], train_s, val_s)
        if "val_robust_acc" in row:
            summary["best_val_robust_acc"] = best_robust_acc(history)
            log.info("%sepoch %d/%d  val robust acc %.2f (epsilon %g)", self.label, epoch, cfg.epochs,
                     row["val_robust_acc"], cfg.adversary.epsilon)
        self.folder.write_metrics(history)
        self.trackers.log_history(history)
        if not math.isfinite(row["train_loss"]):
            summary["status"] = Status.DIVERGED
            log.warning("%straining loss is %s at epoch %d: stopping this run as diverged", self.label,
                        row["train_loss"], epoch)
            return Status.DIVERGED
        improved = row["val_acc"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["val_acc"], epoch
        state = {"epoch": epoch, "model": trained.model.state_dict(), "optimizer": trained.optimizer.state_dict(),
                 "scheduler": trained.scheduler.state_dict(), "best_val_acc": self.best_acc,
                 "best_epoch": self.best_epoch, "history": history, "config": self.plain_cfg, "rng": trained.rng}
        save_checkpoint(self.folder.checkpoint, state)
        if improved:
            save_checkpoint(self.folder.best_checkpoint, state)
        summary.update(best_val_acc=self.best_acc, best_epoch=self.best_epoch)
        return None

    def failed(self, error: BaseException) -> None:
        self.summary["status"] = Status.FAILED
        text = str(error)
        self.summary["error"] = f"{type(error).__name__}: {text}".strip().splitlines()[-1] if text else type(error).__name__

    def close(self) -> dict[str, Any]:
        """Final summary.json and curves.png, whatever the outcome; return the summary."""
        if self.best_epoch is not None:
            self.summary.update(best_val_acc=self.best_acc, best_epoch=self.best_epoch)
        self.summary["wall_s"] = time.perf_counter() - self.started
        self.folder.write_summary(self.summary)
        self.trackers.end(self.summary, self.folder.best_checkpoint)  # after the run's own files
        try:
            self.folder.plot_curves(self.history)
        finally:
            self.folder.close()
        return self.summary
