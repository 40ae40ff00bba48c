"""Everything a run leaves in its folder, written as it goes; the one home of its file names and statuses.

config.yaml (the fully resolved config; Hydra's `.hydra/config.yaml` keeps interpolations
unresolved), metrics.csv (a row per epoch), summary.json (the outcome: a `Status`, also for
failed, diverged and interrupted runs), curves.png, TensorBoard scalars (every epoch, a resumed
run's earlier ones too) and HParams (runner/record/tb_hparams.py), and the checkpoints. Other modules
name these files and statuses by the constants here and read them with `read_summary`,
`read_config` and `read_metrics`; folders that may be anyone's are read with warnings by
runner/results/read.py.
"""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path
from typing import Any

# pandas and common.io (which loads torch) are imported where they are used: the collector, the
# sweeper and the launchers read Status and the file names without paying for them.

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"  # the resolved config; Hydra's own copy is HYDRA_DIR/CONFIG_FILE
CURVES_FILE = "curves.png"
CHECKPOINT_FILE = "checkpoint.pth.tar"
BEST_CHECKPOINT_FILE = "model_best.pth.tar"
TENSORBOARD_DIR = "tensorboard"
REPLICATE_FOLDER = "replicate_{}"  # a `replicates=N` job's replicate_0, replicate_1, ...: each a run folder
# What Hydra writes into the folder before the run starts.
HYDRA_DIR = ".hydra"
HYDRA_FILE = "hydra.yaml"
OVERRIDES_FILE = "overrides.yaml"
# Everything a run itself writes here (Hydra's `.hydra/` and the job's log are Hydra's).
RUN_OUTPUTS = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CURVES_FILE, CHECKPOINT_FILE, BEST_CHECKPOINT_FILE,
               TENSORBOARD_DIR)

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "train_s", "val_s"]


class Status(enum.StrEnum):
    """A run's status in summary.json (each value is the string written there)."""
    RUNNING = "running"  # written when training starts; a run killed hard keeps it
    COMPLETED = "completed"  # trained all its epochs (or stopped early by its own rule)
    DIVERGED = "diverged"  # its loss went NaN or infinite; its best epoch before that stands
    FAILED = "failed"  # raised: no value
    INTERRUPTED = "interrupted"  # stopped from outside (Ctrl-C, a stopped sweeper); running it again goes on
    PRUNED = "pruned"  # stopped by an Optuna pruner; its last value is its value
    REFUSED = "refused"  # its config was refused before it trained


STATUSES = tuple(Status)

ENDED = frozenset({Status.COMPLETED, Status.DIVERGED, Status.FAILED, Status.PRUNED, Status.REFUSED})
"""The run ended by itself and its summary won't change anymore (not running, not interrupted)."""

FINISHED = frozenset({Status.COMPLETED, Status.DIVERGED})
"""Trained to its end (its last epoch, or the NaN that stops it): a final result that a seeded run
would repeat. Running the command again reuses it; an Optuna study holds it as COMPLETE."""

NO_VALUE = frozenset({Status.FAILED, Status.REFUSED})
"""Never gave a value for the objective (whatever its summary holds is not a result)."""

NEVER_TRAINED = frozenset({Status.REFUSED})
"""Never trained: any numbers its summary holds are not its own."""

FAILURES = frozenset({Status.DIVERGED, Status.FAILED, Status.REFUSED})
"""Ended without a result worth averaging: a replicate mean leaves them out and counts them as failed."""

# Which runs count towards a mean differs for one reason: the replicates of one `replicates=N` job
# are pruned together (fused, they stop at the same epoch; one after another, only the last is
# pruned, on the mean), so a pruned job's mean over them is its value, the one Optuna holds; runs
# collected into one row are separate runs, and a pruned one stopped early on its own, so its value
# would pull a mean of finished runs down: the row counts completed runs only and says `pruned`.
COUNTED_IN_JOB = frozenset({Status.COMPLETED, Status.PRUNED})
"""The replicates of one `replicates=N` job whose value enters the job's mean (runner/sweep/replicate_summary.py)."""

COUNTED_IN_ROW = frozenset({Status.COMPLETED})
"""The runs of one config whose value enters a collected row's mean (runner/results/replicate_stats.py)."""


class RunFolder:
    def __init__(self, path: Path, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        from common.io import remove_stale_temp_files

        remove_stale_temp_files(self.path)  # left by an earlier run here that was killed mid-write
        self._writer = None
        self._config: dict[str, Any] | None = None
        self._logged_epoch = 0  # epochs already in the TensorBoard log
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path / TENSORBOARD_DIR))

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def best_checkpoint(self) -> Path:
        return self.path / BEST_CHECKPOINT_FILE

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        """Rewrite metrics.csv from the whole history (a resumed run carries its earlier rows)."""
        # Columns a run adds (val_robust_acc with an adversary) come after the fixed ones.
        import pandas as pd

        from common.io import atomic_write_text

        columns = METRIC_COLUMNS + [k for k in (history[-1] if history else {}) if k not in METRIC_COLUMNS]
        frame = pd.DataFrame(history, columns=columns)
        atomic_write_text(self.path / METRICS_FILE, frame.to_csv(index=False))
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

        from common.io import atomic_write_text

        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(plain_cfg, sort_keys=False))
        self._config = plain_cfg

    def write_summary(self, summary: dict[str, Any]) -> None:
        assert summary["status"] in STATUSES, summary["status"]
        clean = _finite(summary)
        _write_summary_file(self.path, clean)
        if self._writer is not None and self._config is not None:
            from runner.record.tb_hparams import write_hparams

            write_hparams(self._writer, self._config, clean)

    def plot_curves(self, history: list[dict[str, float]]) -> None:
        if not history:
            return
        # matplotlib's object API, not pyplot: no global figure state and no tight_layout pass,
        # which dominated the cost of a call that every trial of a sweep pays.
        import pandas as pd
        from matplotlib.figure import Figure

        from common.io import atomic_save_figure

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
        atomic_save_figure(fig, self.path / CURVES_FILE, dpi=80)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _finite(summary: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: such a number is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}


def _write_summary_file(path: Path, summary: dict[str, Any]) -> None:
    from common.io import atomic_write_json

    atomic_write_json(Path(path) / SUMMARY_FILE, summary)


def record_refused(path: Path, reason: str) -> None:
    """A sweep job refused before it ran (runner/trust/job_boundary.py): its folder says so, and why."""
    RunFolder(path, tensorboard=False).write_summary(
        {"status": Status.REFUSED, "best_val_acc": None, "best_epoch": None, "epochs_done": 0, "error": reason})


def record_interrupted(path: Path, note: str, outcome: dict[str, Any] | None = None) -> None:
    """A run stopped from outside (a killed job, a stopped sweeper): its summary.json says `interrupted`
    and why, keeping every field it held before; `outcome` adds what else is known (from metrics.csv)."""
    previous = read_summary(path) or {}
    _write_summary_file(path, _finite({**previous, **(outcome or {}), "status": Status.INTERRUPTED, "error": note}))


def read_summary(path: Path) -> dict[str, Any] | None:
    """The run folder's summary.json; None where there is none, or it is no JSON object."""
    try:
        summary = json.loads((Path(path) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def read_config(path: Path) -> dict[str, Any] | None:
    """The run folder's resolved config.yaml as plain data; None where there is none, or it is no mapping.

    Classes that have moved since the run was recorded are named as they are now (runner/config/moved.py).
    """
    import yaml

    from runner.config.moved import with_current_targets

    try:
        config = yaml.safe_load((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return with_current_targets(config) if isinstance(config, dict) else None


def read_metrics(path: Path) -> Any:
    """The run folder's metrics.csv as a pandas frame; None where there is none, or it is no table."""
    import pandas as pd

    try:
        return pd.read_csv(Path(path) / METRICS_FILE)
    except (OSError, ValueError):
        return None
