"""Everything a run leaves in its folder, written as it goes.

metrics.csv (a row per epoch), summary.json (the outcome, also for failed, diverged and
interrupted runs), curves.png, TensorBoard scalars (every epoch, a resumed run's earlier ones
too) and HParams (runner/tb_hparams.py), and the checkpoints. The resolved config
is Hydra's `.hydra/config.yaml`, and also travels inside every checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from common.io import atomic_save_figure, atomic_write_json, atomic_write_text, remove_stale_temp_files

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "train_s", "val_s"]
STATUSES = ("running", "completed", "diverged", "failed", "interrupted", "pruned", "refused")


class RunFolder:
    def __init__(self, path: Path, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.path)  # left by an earlier run here that was killed mid-write
        self._writer = None
        self._config: dict[str, Any] | None = None
        self._logged_epoch = 0  # epochs already in the TensorBoard log
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path / "tensorboard"))

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pth.tar"

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "model_best.pth.tar"

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        """Rewrite metrics.csv from the whole history (a resumed run carries its earlier rows)."""
        # Columns a run adds (val_robust_acc with an adversary) come after the fixed ones.
        columns = METRIC_COLUMNS + [k for k in (history[-1] if history else {}) if k not in METRIC_COLUMNS]
        frame = pd.DataFrame(history, columns=columns)
        atomic_write_text(self.path / "metrics.csv", frame.to_csv(index=False))
        if self._writer is not None and history:
            # Every row not logged yet: on resume, the earlier epochs too, so the log has them all.
            for row in (r for r in history if r["epoch"] > self._logged_epoch):
                for name in columns[1:]:
                    if row.get(name) is not None:
                        self._writer.add_scalar(name, row[name], row["epoch"])
            self._logged_epoch = history[-1]["epoch"]
            self._writer.flush()

    def write_config(self, plain_cfg: dict[str, Any]) -> None:
        """The fully resolved config (Hydra's .hydra/config.yaml keeps interpolations unresolved)."""
        import yaml

        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(plain_cfg, sort_keys=False))
        self._config = plain_cfg

    def write_summary(self, summary: dict[str, Any]) -> None:
        assert summary["status"] in STATUSES, summary["status"]
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
        atomic_write_json(self.path / "summary.json", clean)
        if self._writer is not None and self._config is not None:
            from runner.tb_hparams import write_hparams

            write_hparams(self._writer, self._config, clean)

    def plot_curves(self, history: list[dict[str, float]]) -> None:
        if not history:
            return
        # matplotlib's object API, not pyplot: no global figure state and no tight_layout pass,
        # which dominated the cost of a call that every trial of a sweep pays.
        from matplotlib.figure import Figure

        frame = pd.DataFrame(history)
        fig = Figure(figsize=(10, 4))
        loss_ax, acc_ax = fig.subplots(1, 2)
        for ax, columns, title in ((loss_ax, ["train_loss", "val_loss"], "loss"),
                                   (acc_ax, ["train_acc", "val_acc", "val_top5"], "accuracy (%)")):
            for column in columns:
                ax.plot(frame["epoch"], frame[column], marker="o", label=column)
            ax.set(title=title, xlabel="epoch")
            ax.legend()
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.92, wspace=0.2)
        atomic_save_figure(fig, self.path / "curves.png", dpi=80)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def record_refused(path: Path, reason: str) -> None:
    """A sweep job refused before it ran (runner/job_boundary.py): its folder says so, and why."""
    RunFolder(path, tensorboard=False).write_summary(
        {"status": "refused", "best_val_acc": None, "best_epoch": None, "epochs_done": 0, "error": reason})
