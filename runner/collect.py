"""`python -m runner.collect DIR [DIR ...] [--out OUT]`: every run's outcome, in one table.

DIR is a sweep dir, a single run's folder, or any folder holding run folders at any depth
(`outputs/runs`, `outputs/multirun`); several DIRs are merged. Writes into OUT (default: the
first DIR; created if missing):
  results.txt  one line per run in launch order: best val accuracy with two decimals (the
               course's format), or `<acc> <status>` / a word saying why there is none;
  results.csv  one row per run: job (the run folder's own name: never renumbered), origin (the
               folder the run is in, when there are several), every config key that varies
               across any of the runs (its effective value, defaults included; empty where a
               run has no such key or it is null), best_val_acc, any other best_* value a run's
               summary.json holds, best_epoch, epochs_done, status, train_s, val_s, wall_s,
               params_m, error, run_dir;
  best.json    the best run, its overrides and the command that repeats it (runner/best_run.py);
  accuracy_by_param.png, val_acc_curves.png  (runner/plots.py);
  report.html  all of the above in one self-contained page (runner/report_html.py);
and prints a Markdown table sorted by accuracy. Safe to run while a sweep is still going.
With no run folder to read it writes nothing and says so (exit status 2).
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

from common.errors import ConfigError
from common.io import atomic_write_text

log = logging.getLogger("runner.collect")

OUTCOME_COLUMNS = ["best_val_acc", "best_epoch", "epochs_done", "status", "train_s", "val_s", "wall_s", "params_m"]
SEARCH_DEPTH = 4  # how deep below a DIR run folders are looked for (outputs/multirun/<date>/<job>)
# Keys that differ between runs without being an experimental choice.
IGNORED_KEYS = {"resume", "rerun", "progress", "tensorboard", "dataset.root", "logger"}  # logger: a whole group


def is_run_dir(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "summary.json").exists()


def find_runs(folder: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Run folders at or below `folder`: a sweep's jobs in launch order (job number), other
    folders by name (dated folders sort by date); a run folder's own subfolders are not searched."""
    if is_run_dir(folder) and not (folder / "multirun.yaml").exists():
        return [folder]
    if depth <= 0:
        return []
    children = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_launch_order)
    return [run for child in children for run in find_runs(child, depth - 1)]


def _launch_order(path: Path) -> tuple:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


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
    # `group@package` entries are Hydra's bookkeeping for nested defaults, not a choice the user made.
    return {k: v for k, v in choices.items() if "/" not in k and "@" not in k and v is not None}


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
    """Keys whose value differs between runs. A group swept by name (model=lenet,cnn5) shows as
    its name; a key inside it is kept too where it differs between runs of the same choice
    (model.activation among the cnn5 runs), so no two rows that differ read alike."""
    swept_groups = {g for g in set().union(*choices)
                    if g not in IGNORED_KEYS and len({c.get(g) for c in choices}) > 1} if choices else set()
    # Shallow keys first, so `lr` is kept and its interpolated copy `optimizer.lr` dropped.
    keys = sorted(set().union(*configs), key=lambda k: (k.count("."), k)) if configs else []
    varying, seen_series = [], set()
    for key in keys:
        series = tuple(repr(c.get(key)) for c in configs)
        group = key.split(".")[0]
        if group in swept_groups:
            by_choice: dict[Any, set[str]] = {}
            for choice, value in zip(choices, series):
                by_choice.setdefault(choice.get(group), set()).add(value)
            varies = any(len(values) > 1 for values in by_choice.values())
        else:
            varies = len(set(series)) > 1
        if key in IGNORED_KEYS or group in IGNORED_KEYS or not varies or series in seen_series:
            continue
        seen_series.add(series)
        varying.append(key)
    return sorted(swept_groups) + varying


def extra_outcome_columns(outcomes: list[dict[str, Any]]) -> list[str]:
    """Other best_* numbers some run's summary.json holds (e.g. best_val_robust_acc), shown after best_val_acc."""
    extra = {k for o in outcomes for k, v in o.items()
             if k.startswith("best_") and k not in OUTCOME_COLUMNS and isinstance(v, (int, float, type(None)))}
    return sorted(extra)


def collect(sweep_dirs: list[Path]) -> pd.DataFrame:
    """One row per run folder found under `sweep_dirs` (each run once, in the order given)."""
    runs, seen = [], set()
    for d in sweep_dirs:
        for run in find_runs(Path(d)):
            if run.resolve() not in seen:
                seen.add(run.resolve())
                runs.append(run)
    configs = [read_config(r) for r in runs]
    choices = [read_choices(r) for r in runs]
    outcomes = [read_outcome(r) for r in runs]
    columns = varying_columns(configs, choices)
    extras = extra_outcome_columns(outcomes)
    origins = [str(run.parent) for run in runs]
    origin_columns = ["origin"] if len(set(origins)) > 1 else []
    rows = []
    for run, origin, config, choice, outcome in zip(runs, origins, configs, choices, outcomes):
        # The folder's own name: job numbers stay those of the sweep, also in a merged table.
        row: dict[str, Any] = {"job": int(run.name) if run.name.isdigit() else run.name, "origin": origin}
        for key in columns:
            value = choice.get(key, config.get(key))
            row[key] = list(value) if isinstance(value, tuple) else value
        row.update({k: outcome.get(k) for k in OUTCOME_COLUMNS + extras})
        row["error"] = outcome.get("error")
        row["run_dir"] = str(run)
        rows.append(row)
    outcome_columns = OUTCOME_COLUMNS[:1] + extras + OUTCOME_COLUMNS[1:]
    table = pd.DataFrame(rows, columns=["job", *origin_columns, *columns, *outcome_columns, "error", "run_dir"])
    return table.astype({"best_epoch": "Int64", "epochs_done": "Int64"})


def key_columns(table: pd.DataFrame) -> list[str]:
    """The config keys that tell the table's runs apart."""
    outcome = {"job", "origin", "error", "run_dir", *OUTCOME_COLUMNS}
    return [c for c in table.columns if c not in outcome and not c.startswith("best_")]


def results_line(row: pd.Series) -> str:
    acc = row["best_val_acc"]
    has_acc = acc is not None and not (isinstance(acc, float) and math.isnan(acc))
    if row["status"] == "completed" and has_acc:
        return f"{acc:.2f}"
    return f"{acc:.2f} {row['status']}" if has_acc else str(row["status"])


def markdown_table(table: pd.DataFrame) -> str:
    """The table sorted by accuracy, best first; empty cells for missing values (never `nan`)."""
    shown = table.drop(columns=["run_dir", "error"]).sort_values("best_val_acc", ascending=False, na_position="last")
    shown = shown.astype(object).where(shown.notna(), None)
    # Two decimals for accuracies and seconds; swept values (lr=0.001...) as they are.
    formats = [".2f" if c in OUTCOME_COLUMNS or c.startswith("best_") else "g" for c in shown.columns]
    return shown.to_markdown(index=False, floatfmt=formats, missingval="")


def collect_and_report(sweep_dirs: list[str | Path], out_dir: str | Path | None = None) -> pd.DataFrame:
    """Collect, write the tables, best.json, plots and report.html into `out_dir`, print the table.

    Raises ConfigError, having written nothing, when there is no run folder to collect.
    """
    from runner.best_run import write_best
    from runner.plots import write_plots
    from runner.report_html import write_report

    dirs = [Path(d) for d in sweep_dirs]
    out = Path(out_dir) if out_dir is not None else dirs[0]
    table = collect(dirs)
    if table.empty:
        raise ConfigError(f"no run folders under {', '.join(map(str, dirs))}: nothing collected, no files written; "
                          "pass a sweep dir (outputs/multirun/<date_time>) or a folder of run folders")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.txt", "".join(results_line(r) + "\n" for _, r in table.iterrows()))
    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    keys = key_columns(table)
    best = write_best(table, out, keys)
    plots = write_plots(table, keys, out)
    write_report(table, out, plots, best)
    print(markdown_table(table))
    print(f"\n{len(table)} runs; results.txt, results.csv, best.json and report.html in {out}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", help="sweep dirs, run folders, or folders of them (outputs/runs)")
    parser.add_argument("--out", help="where to write the tables (default: the first dir; created if missing)")
    args = parser.parse_args(argv)
    for d in args.sweep_dirs:
        if not Path(d).is_dir():
            print(f"error: {d} is not a folder; pass a sweep dir such as outputs/multirun/<date>", file=sys.stderr)
            return 2
    try:
        collect_and_report(args.sweep_dirs, args.out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
