"""`python -m runner.collect SWEEP_DIR [SWEEP_DIR ...]`: every run's outcome, in one table.

Reads each run folder (a sweep's numbered job folders, or a single run's folder) and writes
into the sweep dir:
  results.txt  one line per run in launch order: best val accuracy with two decimals (the
               course's format), or a word saying why there is none, so line k is run k;
  results.csv  one row per run: job, every config key that varies across the runs (its
               effective value, defaults included), best_val_acc, best_epoch, epochs_done,
               status, train_s, val_s, wall_s, params_m, error, run_dir;
  accuracy_by_param.png  best accuracy against each varying key;
and prints a Markdown table sorted by accuracy. Safe to run while a sweep is still going.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from common.io import atomic_write_text

log = logging.getLogger("runner.collect")

OUTCOME_COLUMNS = ["best_val_acc", "best_epoch", "epochs_done", "status", "train_s", "val_s", "wall_s", "params_m"]
# Keys that differ between runs without being an experimental choice.
IGNORED_KEYS = {"resume", "rerun", "progress", "tensorboard", "dataset.root"}


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "summary.json").exists()


def find_runs(sweep_dir: Path) -> list[Path]:
    """Run folders under `sweep_dir` in launch order (job number), or the folder itself for a single run."""
    if is_run_dir(sweep_dir) and not (sweep_dir / "multirun.yaml").exists():
        return [sweep_dir]
    runs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit() and is_run_dir(p)]
    return sorted(runs, key=lambda p: int(p.name))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tuple(tree) if isinstance(tree, list) else tree}


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config, flattened; falls back to Hydra's copy if the run died before writing it."""
    resolved = run_dir / "config.yaml"
    if resolved.exists():
        return flatten(yaml.safe_load(resolved.read_text()) or {})
    hydra_copy = run_dir / ".hydra" / "config.yaml"
    if hydra_copy.exists():
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(hydra_copy)
        try:
            return flatten(OmegaConf.to_container(cfg, resolve=True))
        except Exception:  # an interpolation that needs the runtime: keep it unresolved
            return flatten(OmegaConf.to_container(cfg, resolve=False))
    return {}


def read_choices(run_dir: Path) -> dict[str, str]:
    """Which file of each config group the run used (model=lenet, dataset=digits...)."""
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    if not hydra_yaml.exists():
        return {}
    choices = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {}).get("runtime", {}).get("choices", {})
    return {k: v for k, v in choices.items() if not k.startswith("hydra/") and v is not None}


def read_outcome(run_dir: Path) -> dict[str, Any]:
    """summary.json, or what metrics.csv says of a run that has not finished (or was killed hard)."""
    summary_file = run_dir / "summary.json"
    if summary_file.exists():
        try:
            return json.loads(summary_file.read_text())
        except json.JSONDecodeError:
            pass
    outcome: dict[str, Any] = {"status": "running"}
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        frame = pd.read_csv(metrics)
        if len(frame):
            best = frame["val_acc"].idxmax()
            outcome.update(best_val_acc=float(frame["val_acc"][best]), best_epoch=int(frame["epoch"][best]),
                           epochs_done=int(frame["epoch"].max()), train_s=float(frame["train_s"].sum()))
    return outcome


def varying_columns(configs: list[dict[str, Any]], choices: list[dict[str, str]]) -> list[str]:
    """Keys whose value differs between runs; a group swept by name shows as its name only."""
    swept_groups = {g for g in set().union(*choices) if len({c.get(g) for c in choices}) > 1} if choices else set()
    # Shallow keys first, so `lr` is kept and its interpolated copy `optimizer.lr` dropped.
    keys = sorted(set().union(*configs), key=lambda k: (k.count("."), k)) if configs else []
    varying, seen_series = [], set()
    for key in keys:
        series = tuple(repr(c.get(key)) for c in configs)
        if key in IGNORED_KEYS or key.split(".")[0] in swept_groups or len(set(series)) < 2 or series in seen_series:
            continue
        seen_series.add(series)
        varying.append(key)
    return sorted(swept_groups) + varying


def collect(sweep_dirs: list[Path]) -> pd.DataFrame:
    runs = [run for d in sweep_dirs for run in find_runs(Path(d))]
    configs = [read_config(r) for r in runs]
    choices = [read_choices(r) for r in runs]
    columns = varying_columns(configs, choices)
    rows = []
    for job, (run, config, choice) in enumerate(zip(runs, configs, choices)):
        outcome = read_outcome(run)
        row: dict[str, Any] = {"job": int(run.name) if run.name.isdigit() and len(sweep_dirs) == 1 else job}
        for key in columns:
            value = choice.get(key, config.get(key))
            row[key] = list(value) if isinstance(value, tuple) else value
        row.update({k: outcome.get(k) for k in OUTCOME_COLUMNS})
        row["error"] = outcome.get("error")
        row["run_dir"] = str(run)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["job", *columns, *OUTCOME_COLUMNS, "error", "run_dir"])
    return table.astype({"best_epoch": "Int64", "epochs_done": "Int64"})


def results_line(row: pd.Series) -> str:
    acc = row["best_val_acc"]
    has_acc = acc is not None and not (isinstance(acc, float) and math.isnan(acc))
    if row["status"] == "completed" and has_acc:
        return f"{acc:.2f}"
    return f"{acc:.2f} {row['status']}" if has_acc else str(row["status"])


def plot_by_param(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    """Best accuracy against each varying key (one panel each), the mean over the other keys as a line."""
    done = table.dropna(subset=["best_val_acc"])
    if not columns or done.empty:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.5), squeeze=False)
    for ax, key in zip(axes[0], columns):
        values = done[key].astype(str)
        # Numbers in numeric order; names (course=..., model=...) in launch order.
        unique = list(values.unique())
        order = sorted(unique, key=float) if all(map(_is_number, unique)) else unique
        position = {v: i for i, v in enumerate(order)}
        ax.scatter(values.map(position), done["best_val_acc"], alpha=0.6)
        means = done.groupby(values)["best_val_acc"].mean().reindex(order)
        ax.plot(range(len(order)), means.values, marker="o", color="black")
        ax.set_xticks(range(len(order)), order, rotation=30)
        ax.set_xlabel(key)
        ax.set_ylabel("best val acc (%)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def collect_and_report(sweep_dirs: list[str | Path], out_dir: str | Path | None = None) -> pd.DataFrame:
    """Collect, write results.txt / results.csv / the plot into `out_dir`, print the table."""
    dirs = [Path(d) for d in sweep_dirs]
    out = Path(out_dir) if out_dir is not None else dirs[0]
    table = collect(dirs)
    atomic_write_text(out / "results.txt", "".join(results_line(r) + "\n" for _, r in table.iterrows()))
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    varying = [c for c in table.columns if c not in ("job", *OUTCOME_COLUMNS, "error", "run_dir")]
    plot_by_param(table, varying, out / "accuracy_by_param.png")
    shown = table.drop(columns=["run_dir", "error"]).sort_values("best_val_acc", ascending=False, na_position="last")
    # Two decimals for accuracies and seconds; swept values (lr=0.001...) as they are.
    formats = [".2f" if c in OUTCOME_COLUMNS else "g" for c in shown.columns]
    print(shown.to_markdown(index=False, floatfmt=formats))
    print(f"\n{len(table)} runs; results.txt and results.csv in {out}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", help="sweep dirs (outputs/multirun/...) or single run folders")
    parser.add_argument("--out", help="where to write the tables (default: the first sweep dir)")
    args = parser.parse_args(argv)
    for d in args.sweep_dirs:
        if not Path(d).is_dir():
            print(f"error: {d} is not a folder; pass a sweep dir such as outputs/multirun/<date>", file=sys.stderr)
            return 2
    table = collect_and_report(args.sweep_dirs, args.out)
    if table.empty:
        print(f"error: no run folders under {args.sweep_dirs}; pass a sweep dir or run folder", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
