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


def write_fake_replicate_job(job_dir: Path, config: dict[str, Any], values: list[float | None], *,
                             statuses: list[str] | None = None, seed: int = 0, job_mean: float | None = None,
                             choices: dict[str, str] | None = None) -> Path:
    """A `replicates=N` job's folder: replicate_<k>/ run folders (seed + k, `replicates: 1`) reaching
    `values` with `statuses`, and the job's own config.yaml (`replicates: N`), summary.json (the
    objective: the mean over the completed replicates, or `job_mean`; a `replicates` block) and
    metrics.csv of mean curves with val_acc_std."""
    import statistics

    statuses = statuses or ["completed"] * len(values)
    counted = [v for v, s in zip(values, statuses) if s == "completed" and v is not None]
    mean = statistics.mean(counted) if counted else None
    std = statistics.stdev(counted) if len(counted) >= 2 else None
    folders = [f"replicate_{k}" for k in range(len(values))]
    block = {"n": len(counted), "requested": len(values), "mean": mean, "std": std, "values": list(values),
             "seeds": [seed + k for k in range(len(values))], "statuses": statuses, "folders": folders}
    write_fake_run(job_dir, {**config, "seed": seed, "replicates": len(values)},
                   job_mean if job_mean is not None else mean, choices=choices, replicates=block)
    curves = []
    for k, (value, status) in enumerate(zip(values, statuses)):
        run = write_fake_run(job_dir / folders[k], {**config, "seed": seed + k, "replicates": 1}, value,
                             status=status, choices=choices)
        if status == "completed" and value is not None:
            curves.append(pd.read_csv(run / "metrics.csv"))
    if curves:
        stacked = pd.concat(curves).groupby("epoch")["val_acc"]
        pd.DataFrame({"epoch": stacked.mean().index, "val_acc": stacked.mean().values,
                      "val_acc_std": stacked.std().values, "train_s": 0.1}).to_csv(job_dir / "metrics.csv", index=False)
    return job_dir
