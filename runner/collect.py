"""`python -m runner.collect DIR [DIR ...] [--out OUT]`: every run's outcome, in one table.

DIR is a sweep dir, a single run's folder, or any folder holding run folders at any depth
(`outputs/runs`, `outputs/multirun`); several DIRs are merged. Writes into OUT (default: the
first DIR; created if missing):
  results.txt  one line per run in launch order: best val accuracy with two decimals (the
               course's format), or `<acc> <status>` / a word saying why there is none;
               runs that differ only in seed, and a replicate job, are one config: its mean
               (runner/results/replicate_stats.py; every table's rows are then configs, mean ± std);
  results.csv  one row per run: job (the run folder's own name: never renumbered), origin (the
               folder the run is in, when there are several), every config key that varies
               across any of the runs (its effective value, defaults included; empty where a
               run has no such key or it is null), best_val_acc, any other best_* value a run's
               summary.json holds, best_epoch, epochs_done, status, train_s, val_s, wall_s,
               params_m, error, run_dir;
  best.json    the best run, its overrides and the command that repeats it (runner/results/best_run.py),
               and with replicates which configs are not distinguishable from it (runner/results/replicate_compare.py);
               with several objectives (`objective=[val_acc,params_m]`) the Pareto front instead,
               results.csv gains a `front` column (0: on the front) and is sorted by it, and
               pareto_front.png shows it (runner/results/pareto.py);
  param_importance.csv  each swept key's importance and correlation (runner/results/param_table.py);
  accuracy_by_param.png, val_acc_curves.png  (runner/results/plots.py);
  report.html  all of the above in one self-contained page (runner/results/report_html.py);
and prints a Markdown table, best run first (runner/results/best_run.py's order). Safe to run while a
sweep is still going, and on folders from anywhere: a file it cannot use gets one warning line
naming it (runner/results/read.py) and the rest is collected. With no run folder to read, or an
--out that is no folder, it writes nothing and says so in one line (exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from common.errors import ConfigError, entry_point
from common.io import atomic_write_text, temp_files_of
from runner.results.read import (ACCURACY_PICTURE, BEST_FILE, CURVES_PICTURE, FRONT_PICTURE, PARAM_TABLE_FILE, REPORT_FILE,
                                 RESULTS_CSV, RESULTS_TXT, find_runs, job_name, printable, read_choices, read_config,
                                 read_outcome, reset_warnings)

from runner.config.keys import is_display
from runner.record.run_folder import Status
from runner.results.pareto import FRONT, with_front
from runner.results.pareto_report import in_table_order, write_front_plot
from runner.results.replicate_stats import STAT_COLUMNS
from runner.sweep.job_records import with_job_records

log = logging.getLogger("runner.collect")

OUTCOME_COLUMNS = ["best_val_acc", "best_epoch", "epochs_done", "status", "train_s", "val_s", "wall_s", "params_m"]
RESERVED = {"job", "origin", "error", "run_dir", FRONT, *OUTCOME_COLUMNS, *STAT_COLUMNS}  # a config key so named: config.<key>
OUTPUTS = (RESULTS_TXT, RESULTS_CSV, BEST_FILE, REPORT_FILE, ACCURACY_PICTURE, CURVES_PICTURE, FRONT_PICTURE,
           PARAM_TABLE_FILE)
SHARED_OUTPUTS = {BEST_FILE: 60.0}  # also written by an Optuna study's report, outside our lock: only older temps
LOCK_NAME = ".collect.lock"


def _unclashed(config: dict[str, Any]) -> dict[str, Any]:
    """A config key that reads like one of the table's own columns (status, best_...) as config.<key>."""
    return {(f"config.{k}" if k in RESERVED or k.startswith("best_") else k): v for k, v in config.items()}


def varying_columns(configs: list[dict[str, Any]], choices: list[dict[str, str]]) -> list[str]:
    """Keys whose value differs between runs. A group swept by name (model=lenet,cnn5) shows as
    its name; a key inside it is kept too where it differs between runs of the same choice
    (model.activation among the cnn5 runs), so no two rows that differ read alike."""
    swept_groups = {g for g in set().union(*choices)
                    if not is_display(g) and len({c.get(g) for c in choices}) > 1} if choices else set()
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
        if is_display(key) or not varies or series in seen_series:  # display keys are no experimental choice
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
    configs = [_unclashed(read_config(r)) for r in runs]
    choices = [_unclashed(read_choices(r)) for r in runs]
    outcomes = with_job_records(runs, [read_outcome(r) for r in runs])
    columns = varying_columns(configs, choices)
    extras = extra_outcome_columns(outcomes)
    origins = [str(run.parent) for run in runs]
    origin_columns = ["origin"] if len(set(origins)) > 1 else []
    rows = []
    for run, origin, config, choice, outcome in zip(runs, origins, configs, choices, outcomes):
        # The folder's own name: job numbers stay those of the sweep, also in a merged table.
        row: dict[str, Any] = {"job": job_name(run), "origin": origin}
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
    outcome = {"job", "origin", "error", "run_dir", FRONT, *OUTCOME_COLUMNS, *STAT_COLUMNS}
    return [c for c in table.columns if c not in outcome and not c.startswith("best_")]


def results_line(row: pd.Series) -> str:
    acc = row["best_val_acc"]
    has_acc = acc is not None and not (isinstance(acc, float) and math.isnan(acc))
    if row["status"] == Status.COMPLETED and has_acc:
        return f"{acc:.2f}"
    return f"{acc:.2f} {printable(row['status'])}" if has_acc else printable(row["status"])


def for_output(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every text cell writable anywhere (runner/results/read.py's `printable`)."""
    shown = table.copy()
    for column in shown.columns:
        if shown[column].dtype == object or pd.api.types.is_string_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: printable(v) if isinstance(v, str) else v)
    shown.columns = [printable(c) for c in shown.columns]
    return shown


def markdown_table(table: pd.DataFrame, metric: str | None = None) -> str:
    """The table best run first (runner/results/best_run.py's order); empty cells for missing values (never `nan`)."""
    from runner.results.ranking import objective_metric, ranked

    hidden = [c for c in ("run_dir", "error", "replicate_dirs") if c in table.columns]
    shown = for_output(ranked(table, metric or objective_metric(table)).drop(columns=hidden))
    shown = shown.astype(object).where(shown.notna(), None)
    for column in ("values", "seeds"):  # a config's replicates; their values with two decimals, as the others
        if column in shown.columns:
            shown[column] = shown[column].map(lambda vs: ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                                                   for v in vs))
    # Two decimals for accuracies and seconds; swept values (lr=0.001...) as they are.
    # params_m to four digits: small models differ in the third decimal (an objective with objective=[...,params_m]).
    formats = [".4g" if c == "params_m" else ".2f" if c in OUTCOME_COLUMNS or c.startswith("best_") else "g"
               for c in shown.columns]
    return shown.to_markdown(index=False, floatfmt=formats, missingval="")


def output_folder(out: Path) -> Path:
    """`out` as a folder the tables can go in (created if missing); ConfigError in one line if it cannot be."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {printable(out)} is a file, not a folder; pass a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {printable(out)} cannot be created ({e.strerror}); pass a folder you can write to")
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {printable(out)} is not writable; pass a folder you can write to")
    return out


@contextlib.contextmanager
def writing_into(out: Path) -> Iterator[None]:
    """Hold `out/.collect.lock` (one collector writes a folder at a time, the others wait their
    turn) and remove the temporary files a killed collector left there."""
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for name in OUTPUTS:
            min_age = SHARED_OUTPUTS.get(name, 0.0)
            for path in temp_files_of(out / name):
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime >= min_age:
                        path.unlink()
        yield
    finally:
        os.close(fd)


def collect_and_report(sweep_dirs: list[str | Path], out_dir: str | Path | None = None) -> pd.DataFrame:
    """Collect, write the tables, best.json, plots and report.html into `out_dir`, print the table.

    Raises ConfigError, having written nothing, when there is no run folder to collect or
    `out_dir` cannot be a folder. The tables and best.json are worked out before any is written.
    """
    from runner.results.best_run import best_record, write_best
    from runner.results.ranking import objective_metric
    from runner.results.param_table import html_section, param_table, write_param_table
    from runner.results.plots import write_plots
    from runner.results.replicate_compare import comparison_record
    from runner.results.replicate_stats import as_json_cells, grouped
    from runner.results.report_html import write_report

    reset_warnings()
    dirs = [Path(d) for d in sweep_dirs]
    out = Path(out_dir) if out_dir is not None else dirs[0]
    if out.exists() and not out.is_dir():
        output_folder(out)  # refused before reading anything
    runs = collect(dirs)
    if runs.empty:
        raise ConfigError(f"no run folders under {', '.join(printable(d) for d in dirs)}: nothing collected, no files "
                          "written; pass a sweep dir (outputs/multirun/<date_time>) or a folder of run folders")
    metric = objective_metric(runs)
    table = with_front(grouped(runs, metric))  # one row per config (seeds, replicates), then Pareto fronts
    keys = key_columns(table)
    shown = as_json_cells(for_output(in_table_order(table, metric)))  # by front with several objectives
    lines = "".join(results_line(r) + "\n" for _, r in table.iterrows())
    record = {**best_record(table, keys, metric), **comparison_record(table, keys, metric)}
    printed = markdown_table(table, metric)
    params, note = param_table(table, keys, metric)
    if note:
        log.info("%s", note)
    with writing_into(output_folder(out)):
        atomic_write_text(out / RESULTS_TXT, lines)
        atomic_write_text(out / RESULTS_CSV, shown.to_csv(index=False))
        best = write_best(record, table, out)
        write_param_table(params, out)
        plots = write_plots(table, keys, out, metric) + write_front_plot(table, out, best)
        write_report(table, out, plots, best, [html_section(params, note)])
    print(printed)
    counted = (f"{len(table)} configs ({sum(map(len, table['replicate_dirs']))} runs)" if "replicate_dirs" in table
               else f"{len(table)} runs")
    print(f"\n{counted}; results.txt, results.csv, best.json and report.html in {printable(out)}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", help="sweep dirs, run folders, or folders of them (outputs/runs)")
    parser.add_argument("--out", help="where to write the tables (default: the first dir; created if missing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    for d in args.sweep_dirs:
        if not Path(d).is_dir():
            print(f"error: {printable(d)} is not a folder; pass a sweep dir such as outputs/multirun/<date>",
                  file=sys.stderr)
            return 2
    try:
        collect_and_report(args.sweep_dirs, args.out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    with entry_point():  # anything unexpected: one line, the traceback in a file
        sys.exit(main())
