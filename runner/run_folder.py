"""Everything a run leaves in its folder, written as it goes.

metrics.csv (a row per epoch), summary.json (the outcome, also for failed, diverged and
interrupted runs), curves.png, TensorBoard scalars, and the checkpoints. The resolved config
is Hydra's `.hydra/config.yaml`, and also travels inside every checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from common.io import atomic_write_json, atomic_write_text, remove_stale_temp_files

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "train_s", "val_s"]
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


class RunFolder:
    def __init__(self, path: Path, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.path)  # left by an earlier run here that was killed mid-write
        self._writer = None
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
        frame = pd.DataFrame(history, columns=METRIC_COLUMNS)
        atomic_write_text(self.path / "metrics.csv", frame.to_csv(index=False))
        if self._writer is not None and history:
            row = history[-1]
            for name in METRIC_COLUMNS[1:]:
                self._writer.add_scalar(name, row[name], row["epoch"])
            self._writer.flush()

    def write_config(self, plain_cfg: dict[str, Any]) -> None:
        """The fully resolved config (Hydra's .hydra/config.yaml keeps interpolations unresolved)."""
        import yaml

        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(plain_cfg, sort_keys=False))

    def write_summary(self, summary: dict[str, Any]) -> None:
        assert summary["status"] in STATUSES, summary["status"]
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
        atomic_write_json(self.path / "summary.json", clean)

    def plot_curves(self, history: list[dict[str, float]]) -> None:
        if not history:
            return
        # matplotlib's object API, not pyplot: no global figure state, and no tight_layout pass.
        # It runs once per trial of a sweep: profiled here, the pyplot + tight_layout version took
        # 0.59 s a call (0.17 s of it tight_layout), this one about 0.13 s.
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
        tmp = self.path / ".curves.tmp.png"
        fig.savefig(tmp, dpi=80)
        tmp.replace(self.path / "curves.png")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
