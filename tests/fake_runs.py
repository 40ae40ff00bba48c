"""Hand-written run folders for the collector's pure table/plot/report tests (no training):
the same files a real run leaves (config.yaml, .hydra/, summary.json, metrics.csv)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml


def write_fake_run(run_dir: Path, config: dict[str, Any], best_val_acc: float | None, *,
                   choices: dict[str, str] | None = None, overrides: list[str] | None = None,
                   val_accs: list[float] | None = None, status: str = "completed", recorded: list[str] | None = None,
                   **summary: Any) -> Path:
    """A run folder whose metrics.csv climbs to `best_val_acc` (or follows `val_accs`).

    `overrides`: Hydra's .hydra/overrides.yaml; `recorded`: the overrides the run recorded of
    itself in summary.json when it started training (none: a folder from before such records)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    hydra = {"hydra": {"runtime": {"choices": {"model": "lenet", "dataset": "digits", "hydra/launcher": "basic",
                                               **(choices or {})}}}}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
    if val_accs is None and best_val_acc is not None:
        val_accs = [best_val_acc / 3, best_val_acc * 2 / 3, best_val_acc]
    val_accs = val_accs or []
    if val_accs:
        frame = pd.DataFrame({"epoch": range(1, len(val_accs) + 1), "val_acc": val_accs, "train_s": 0.1})
        frame.to_csv(run_dir / "metrics.csv", index=False)
    outcome = {"status": status, "best_val_acc": best_val_acc,
               "best_epoch": (val_accs.index(max(val_accs)) + 1) if val_accs else None,
               "epochs_done": len(val_accs), "params_m": 0.1, "train_s": 0.3, "val_s": 0.1, "wall_s": 0.5,
               "error": None, **({"overrides": recorded} if recorded is not None else {}), **summary}
    (run_dir / "summary.json").write_text(json.dumps(outcome))
    return run_dir
