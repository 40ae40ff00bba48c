"""The collector's pictures of a sweep, drawn from its table (runner/collect.py).

accuracy_by_param.png  best validation accuracy against each key that varies: numbers on a
                       numeric axis (logarithmic where the values span a decade or more, as
                       Optuna's log-scale parameters do), names as categories in launch order;
                       a line for the mean (per value in a grid: solid, circles; per bin in a
                       search: dashed, squares) and the best run marked, all in the legend; a
                       config with replicates is its mean with a ± std error bar
                       (runner/results/replicate_stats.py);
val_acc_curves.png     validation accuracy per epoch, one line per run, the best run in bold;
                       one panel per sweep when several are merged; a config with replicates
                       is its mean curve with a ± std band. Runs that share epochs
                       (a 5- and a 20-epoch run of one config) lie on one line: each run has
                       its own line style and marker, markers shrink in drawing order so that
                       shared points show as nested rings, and the thin lines are drawn over
                       the best run's thick one.

Each `*_figure` function returns the matplotlib Figure (tests read its axes back); `write_plots`
saves them. matplotlib's object API, not pyplot: no global figure state.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

from common.io import atomic_save_figure
from runner.results.read import ACCURACY_PICTURE, CURVES_PICTURE, printable

log = logging.getLogger("runner.collect")

DPI = 80
PANELS_PER_ROW = 4
MAX_TICKED_VALUES = 8    # up to this many distinct numbers get a tick each (a grid); more: the axis's own ticks
LOG_SPAN = 10.0          # max/min at or above this: a log axis
MAX_LABELLED_CURVES = 10  # more runs than this: only the best run is named in the legend
BEST_COLOUR = "tab:red"
OTHER_COLOURS = [f"C{i}" for i in range(10) if i != 3]  # matplotlib's cycle without its red (C3), kept for the best
# Named curves: a colour, a line style and a marker each, so that runs lying on one line still tell apart.
LINE_STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v"]


def is_numeric(values: pd.Series) -> bool:
    """True when every present value is a number (True/False are categories, not 1/0)."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(present) and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                                 for v in present)


def uses_log_axis(numbers: pd.Series) -> bool:
    low, high = numbers.min(), numbers.max()
    return bool(low > 0 and high / low >= LOG_SPAN)


PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}  # labels as they are written


def plain_text(draw):
    """Draw with every label as plain text: a `$` in a folder, key or value name is a dollar sign,
    not matplotlib math (an unbalanced `$\\frac{x$` would raise), and no LaTeX runs."""
    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        with matplotlib.rc_context(PLAIN_TEXT):
            return draw(*args, **kwargs)
    return drawn


def _best_index(table: pd.DataFrame, metric: str | None = None):
    """best.json's run (runner/results/best_run.py), so the pictures mark the run the report names;
    `metric`: the objective's column, when the caller knows it (else read from the runs' configs)."""
    from runner.results.ranking import best_row, objective_metric

    row = best_row(table, metric or objective_metric(table)) if len(table) else None
    return row.name if row is not None else None


@plain_text
def accuracy_by_param_figure(table: pd.DataFrame, columns: list[str], metric: str | None = None) -> Figure | None:
    """Best val accuracy against each varying key, one panel per key; None when there is nothing to draw."""
    done = table[table["best_val_acc"].notna()]
    if not columns or done.empty:
        return None
    rows = math.ceil(len(columns) / PANELS_PER_ROW)
    cols = min(len(columns), PANELS_PER_ROW)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = np.ravel(fig.subplots(rows, cols, squeeze=False))
    best = _best_index(done, metric)
    for ax, key in zip(axes, columns):
        if is_numeric(done[key]):
            _numeric_panel(ax, done, key, best)
        else:
            _category_panel(ax, done, key, best)
        ax.set_xlabel(printable(key))
        ax.set_ylabel("best val acc (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    # One legend for all panels, above them: inside a panel it hides the points it explains.
    entries = {}
    for ax in axes[: len(columns)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="upper center", ncol=len(entries), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    return fig


def _numeric_panel(ax, done: pd.DataFrame, key: str, best) -> None:
    rows = done[done[key].notna()]
    x = pd.to_numeric(rows[key]).astype(float)
    acc = rows["best_val_acc"].astype(float)
    log = uses_log_axis(x)
    ax.scatter(x, acc, alpha=0.6, label="run")
    _error_bars(ax, x, acc, rows)
    values = np.sort(x.unique())
    if len(values) <= MAX_TICKED_VALUES and len(values) < len(x):  # a grid: each value ran several times
        means = acc.groupby(x).mean()
        ax.plot(means.index, means.values, marker="o", color="black", label="mean over the other keys")
    elif len(x) >= 6:  # a search: every value is new, so average over bins of the axis
        edges = (np.geomspace if log else np.linspace)(x.min(), x.max(), min(6, len(x) // 3) + 1)
        which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        grouped = pd.DataFrame({"x": np.log(x) if log else x, "acc": acc, "bin": which}).groupby("bin").mean()
        centres = np.exp(grouped["x"]) if log else grouped["x"]
        # dashed with squares: a legend beside the per-value mean (solid, circles) tells the two apart
        ax.plot(centres, grouped["acc"], marker="s", linestyle="--", color="black", label="mean per bin")
    if best in rows.index:
        ax.scatter([x[best]], [acc[best]], marker="*", s=160, color=BEST_COLOUR, zorder=3, label="best run")
    if log:
        ax.set_xscale("log")
        # Plain decade labels (0.001): matplotlib's own are math text ($10^{-3}$), which the
        # plain-text drawing prints as it is written.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if len(values) <= MAX_TICKED_VALUES and len(values) < len(x):  # a grid's values, each labelled
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.xaxis.set_minor_locator(NullLocator())


def _category_panel(ax, done: pd.DataFrame, key: str, best) -> None:
    # Names in launch order; a run without the key (another model's option) as "(unset)".
    labels = done[key].map(lambda v: "(unset)" if v is None or (isinstance(v, float) and math.isnan(v))
                           else printable(v))
    order = list(dict.fromkeys(labels))
    position = labels.map({v: i for i, v in enumerate(order)})
    acc = done["best_val_acc"].astype(float)
    ax.scatter(position, acc, alpha=0.6, label="run")
    _error_bars(ax, position, acc, done)
    means = acc.groupby(labels).mean().reindex(order)
    ax.plot(range(len(order)), means.values, marker="o", color="black", label="mean over the other keys")
    if best in position.index:
        ax.scatter([position[best]], [acc[best]], marker="*", s=160, color=BEST_COLOUR, zorder=3, label="best run")
    ax.set_xticks(range(len(order)), order, rotation=30 if max(map(len, order)) > 6 else 0, ha="right")
    ax.set_xlim(-0.5, len(order) - 0.5)


def _error_bars(ax, x: pd.Series, acc: pd.Series, rows: pd.DataFrame) -> None:
    """± std over a config's replicates, where rows are configs with several (runner/results/replicate_stats.py)."""
    if "best_val_acc_std" not in rows.columns:
        return
    std = pd.to_numeric(rows["best_val_acc_std"], errors="coerce").astype(float)
    if std.notna().any():
        ax.errorbar(x[std.notna()], acc[std.notna()], yerr=std[std.notna()], fmt="none", ecolor="C0", alpha=0.6,
                    capsize=3, label="mean ± std over seeds")


def _band(ax, frame: pd.DataFrame, colour: str) -> None:
    """A mean curve's ± std band (a config's replicates, runner/results/replicate_stats.py's `curve_of`)."""
    if "val_acc_std" in frame.columns:
        std = pd.to_numeric(frame["val_acc_std"], errors="coerce").astype(float).fillna(0.0)
        ax.fill_between(frame["epoch"], frame["val_acc"] - std, frame["val_acc"] + std, color=colour, alpha=0.15,
                        linewidth=0)


@plain_text
def curves_figure(table: pd.DataFrame, key_columns: list[str], metric: str | None = None) -> Figure | None:
    """Validation accuracy per epoch, one line per run (from its metrics.csv), a panel per sweep."""
    from runner.results.replicate_stats import curve_of

    groups = list(table.groupby("origin", sort=False)) if "origin" in table.columns else [(None, table)]
    curves = {}
    for _, run in table.iterrows():
        frame = curve_of(run)  # a config's mean curve where it stands for several runs
        if frame is not None and len(frame):
            curves[run.name] = frame
    if not curves:
        return None
    fig = Figure(figsize=(7 * len(groups), 4.2))
    axes = np.ravel(fig.subplots(1, len(groups), squeeze=False, sharey=True))
    for ax, (origin, runs) in zip(axes, groups):
        runs = runs[runs.index.isin(curves.keys())]
        best = _best_index(runs, metric)
        best = best if best is not None and pd.notna(runs.loc[best, "best_val_acc"]) else None
        named = len(runs) <= MAX_LABELLED_CURVES
        # Name runs by what differs within this panel (a merged table's other keys are noise here).
        keys = [k for k in key_columns if runs[k].astype(str).nunique() > 1]
        for i, (index, run) in enumerate(runs.iterrows()):
            frame = curves[index]
            if index == best:
                continue
            if named:  # above the best's thick line (zorder 3), each smaller than the one before
                colour = OTHER_COLOURS[i % len(OTHER_COLOURS)]
                ax.plot(frame["epoch"], frame["val_acc"], linewidth=1.2, alpha=0.85, zorder=4,
                        color=colour, linestyle=LINE_STYLES[i % len(LINE_STYLES)],
                        marker=MARKERS[i % len(MARKERS)], markersize=max(3.0, 9.0 - 0.6 * i), markerfacecolor="none",
                        label=_run_label(run, keys))
                _band(ax, frame, colour)  # many configs: a band for the best alone, or the panel is all bands
            else:
                ax.plot(frame["epoch"], frame["val_acc"], marker=".", linewidth=1, alpha=0.7, color="0.6")
        if not named:
            ax.plot([], [], color="0.6", label=f"{len(runs) - 1} other runs")
        if best is not None:
            frame = curves[best]
            ax.plot(frame["epoch"], frame["val_acc"], marker="o", linewidth=2.8, color=BEST_COLOUR, zorder=3,
                    label=f"best: {_run_label(runs.loc[best], keys)} ({runs.loc[best, 'best_val_acc']:.2f})")
            _band(ax, frame, BEST_COLOUR)
        ax.set(xlabel="epoch", ylabel="val acc (%)", title=_short(origin) if origin else "validation accuracy per epoch")
        epochs = sorted({int(e) for i in runs.index for e in curves[i]["epoch"]})
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        # Below the panel: inside it, a legend hides the very points it names.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False,
                  ncol=1 if len(runs) <= 5 else 2)
    entries = max(min(len(g), MAX_LABELLED_CURVES + 1) for _, g in groups)
    fig.set_size_inches(7 * len(groups), 3.9 + 0.14 * (entries if entries <= 5 else math.ceil(entries / 2)))
    fig.tight_layout()
    return fig


def _run_label(run: pd.Series, key_columns: list[str], width: int = 48) -> str:
    values = ", ".join(f"{k.split('.')[-1]}={run[k]:g}" if isinstance(run[k], float) else f"{k.split('.')[-1]}={run[k]}"
                       for k in key_columns
                       if run[k] is not None and not (isinstance(run[k], float) and math.isnan(run[k])))
    label = printable(f"job {run['job']}" + (f": {values}" if values else ""))
    return label if len(label) <= width else label[: width - 1] + "…"


def _short(path: str) -> str:
    parts = Path(path).parts
    return printable(Path(*parts[-2:]) if len(parts) > 2 else path)




def write_plots(table: pd.DataFrame, key_columns: list[str], out: Path, metric: str | None = None) -> list[str]:
    """Write the pictures there is something to draw for; returns their file names."""
    import matplotlib.style

    written = []
    # matplotlib's default look, whatever style an earlier plot set (Optuna's plots switch to ggplot).
    with matplotlib.style.context("default"), matplotlib.rc_context(PLAIN_TEXT):
        for name, draw in ((ACCURACY_PICTURE, accuracy_by_param_figure), (CURVES_PICTURE, curves_figure)):
            try:
                fig = draw(table, key_columns, metric)
                if fig is not None:
                    atomic_save_figure(fig, out / name, dpi=DPI)
                    written.append(name)
            except Exception as e:  # values no axis takes (someone else's folders): the tables stand without it
                log.warning("%s not drawn (%s: %s)", name, type(e).__name__,
                            printable(e).splitlines()[0] if str(e) else "")
    return written
