"""A run's hyperparameters and final metrics in TensorBoard's HParams format.

`tensorboard --logdir <sweep dir>` then lists every run of the sweep in its HPARAMS tab, one row
each: the run's flattened resolved config (plus which file of each config group it used) and its
final metrics. Only the session start/end records are written, not an "experiment" record: with
none, TensorBoard builds the table from all the runs' sessions, so runs that differ in their keys
(a merged lenet and cnn5 sweep) still line up, and every scalar a run logs (val_acc, ...) is a
metric column too.
"""

from __future__ import annotations

import math
from typing import Any

from runner.config.keys import flatten, is_display

# Final numbers written as scalars beside the per-epoch ones, so they are metric columns.
FINAL_METRICS = ("best_val_acc", "best_epoch", "epochs_done", "wall_s", "params_m")


def hparams_of(config: dict[str, Any], choices: dict[str, str] | None = None) -> dict[str, int | float | str]:
    """The config's scalar leaves as TensorBoard hparam values; booleans and lists as text
    (torch's writer would store True as 1.0), nulls and display keys (runner/config/keys.py) left out."""
    values: dict[str, int | float | str] = {k: v for k, v in (choices or {}).items()
                                            if isinstance(v, str) and not is_display(k)}
    for key, value in flatten(config).items():
        if is_display(key) or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            value = str(value)
        values[key] = value
    return values


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's final numbers: the FINAL_METRICS and any other best_* (e.g. best_val_robust_acc)."""
    names = [*FINAL_METRICS, *(k for k in summary if k.startswith("best_") and k not in FINAL_METRICS)]
    return {k: float(summary[k]) for k in names if isinstance(summary.get(k), (int, float))
            and not isinstance(summary[k], bool) and math.isfinite(summary[k])}


def hydra_choices() -> dict[str, str]:
    """Which file of each config group the run used (model=lenet ...), when Hydra started the run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return {}
        choices = HydraConfig.get().runtime.choices
        return {k: str(v) for k, v in choices.items() if v is not None and "/" not in k and "@" not in k}
    except Exception:  # outside Hydra (a test calling train() directly): the config alone
        return {}


def write_hparams(writer: Any, config: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write the session records and the final metrics into the run's TensorBoard log."""
    from torch.utils.tensorboard.summary import hparams

    metrics = final_metrics(summary)
    _, session_start, session_end = hparams(hparams_of(config, hydra_choices()), metrics)
    file_writer = writer._get_file_writer()
    file_writer.add_summary(session_start)
    file_writer.add_summary(session_end)
    step = int(summary.get("epochs_done") or 0)
    for name, value in metrics.items():
        writer.add_scalar(name, value, step)
    writer.flush()
