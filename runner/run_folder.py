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

from runner.io import atomic_write_json, atomic_write_text

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "train_s", "val_s"]
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


class RunFolder:
    def __init__(self, path: Path, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        frame = pd.DataFrame(history)
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
        frame.plot(x="epoch", y=["train_loss", "val_loss"], ax=loss_ax, marker="o", title="loss")
        frame.plot(x="epoch", y=["train_acc", "val_acc", "val_top5"], ax=acc_ax, marker="o", title="accuracy (%)")
        fig.tight_layout()
        tmp = self.path / ".curves.tmp.png"
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        tmp.replace(self.path / "curves.png")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
