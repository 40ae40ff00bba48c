"""The collector's pictures, read back from their matplotlib figures: numbers on numeric
(log where they span decades) axes, names as categories, legends, the best curve in bold; and
Optuna's parallel coordinates without a near-white line."""

from __future__ import annotations

import matplotlib.colors
import numpy as np
import optuna
import pandas as pd
import pytest

from runner.collect import collect, key_columns
from runner.results.plots import BEST_COLOUR, accuracy_by_param_figure, curves_figure
from tests.fake_runs import write_fake_run


def search_table(n: int = 20) -> pd.DataFrame:
    """An Optuna-like table: lr drawn log-uniformly (every value new), batch size from a choice."""
    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-4, -1, n)
    return pd.DataFrame({"job": range(n), "lr": lr, "batch_size": rng.choice([8, 16, 32, 64], n),
                         "model": ["lenet"] * n, "best_val_acc": 90 - 10 * np.abs(np.log10(lr) + 2),
                         "status": "completed", "run_dir": "x"})


def panel(fig, key):
    return next(ax for ax in fig.axes if ax.get_xlabel() == key)


def test_a_log_scale_parameter_is_on_a_log_axis_not_categories():
    fig = accuracy_by_param_figure(search_table(), ["lr", "batch_size"])
    ax = panel(fig, "lr")
    assert ax.get_xscale() == "log"
    x = ax.collections[0].get_offsets()[:, 0]
    assert x.min() == pytest.approx(search_table()["lr"].min())  # drawn at its value, not at position 0..19
    # A few decade ticks, not twenty labels like 0.00018255254802399022 smeared into each other.
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert 2 <= len(ticks) <= 5 and all(float(np.log10(t)).is_integer() for t in ticks)
    # readable as drawn: "0.001", not the math text "$\\mathdefault{10^{-3}}$" printed as it is written
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
    assert labels and all("$" not in label for label in labels), labels
    assert "0.001" in labels
    assert "mean per bin" in [t.get_text() for t in fig.legends[0].get_texts()]
    # batch size 8..64 spans less than a decade: a linear numeric axis
    assert panel(fig, "batch_size").get_xscale() == "linear"


def test_a_grid_gets_a_tick_per_value_and_a_mean_line_in_the_legend():
    table = pd.DataFrame({"job": range(6), "lr": [0.001, 0.01, 0.05] * 2, "augmentation": ["none"] * 3 + ["flip"] * 3,
                          "best_val_acc": [10.0, 50.0, 60.0, 12.0, 55.0, 58.0], "status": "completed", "run_dir": "x"})
    fig = accuracy_by_param_figure(table, ["lr", "augmentation"])
    lr = panel(fig, "lr")
    assert lr.get_xscale() == "log"
    assert list(lr.get_xticks()) == pytest.approx([0.001, 0.01, 0.05])
    assert [t.get_text() for t in lr.get_xticklabels()] == ["0.001", "0.01", "0.05"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "mean over the other keys" in legend and "best run" in legend
    means = next(line for line in lr.get_lines() if line.get_label() == "mean over the other keys")
    assert list(means.get_ydata()) == pytest.approx([11.0, 52.5, 59.0])
    aug = panel(fig, "augmentation")  # names: categories in launch order
    assert [t.get_text() for t in aug.get_xticklabels()] == ["none", "flip"]


def test_the_curves_overlay_has_a_line_per_run_and_the_best_in_bold(tmp_path):
    for job, accs in enumerate([[20, 40, 50], [30, 60, 80], [10, 15, 12]]):
        write_fake_run(tmp_path / str(job), {"lr": 0.01 * (job + 1)}, max(accs), val_accs=accs)
    table = collect([tmp_path])
    fig = curves_figure(table, key_columns(table))
    lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata())]
    assert len(lines) == 3
    best = max(lines, key=lambda line: line.get_linewidth())
    assert list(best.get_ydata()) == [30, 60, 80]
    assert matplotlib.colors.same_color(best.get_color(), BEST_COLOUR)
    assert best.get_label().startswith("best: job 1")
    assert list(fig.axes[0].get_xticks()) == [1, 2, 3]


def test_the_two_kinds_of_mean_line_look_different_in_one_legend():
    """A search with a binned lr and a batch size from a choice has both a per-value and a per-bin
    mean: two legend entries, which must not be two identical black lines."""
    fig = accuracy_by_param_figure(search_table(), ["lr", "batch_size"])
    handles = dict(zip([t.get_text() for t in fig.legends[0].get_texts()], fig.legends[0].legend_handles))
    per_value, per_bin = handles["mean over the other keys"], handles["mean per bin"]
    assert (per_value.get_linestyle(), per_value.get_marker()) != (per_bin.get_linestyle(), per_bin.get_marker())


def test_curves_that_share_their_epochs_stay_visible(tmp_path):
    """Runs lying on one line (a 2- and a 3-epoch run of one config, and another equal run): each
    has its own line style or marker, markers shrink in drawing order (nested rings where points
    coincide), and the thin lines are drawn over the best's thick one."""
    for job, accs in enumerate([[30, 60, 80], [30, 60], [30, 60, 80], [10, 15, 12]]):
        write_fake_run(tmp_path / str(job), {"epochs": len(accs), "lr": 0.01 if job < 3 else 0.1}, max(accs),
                       val_accs=accs)
    table = collect([tmp_path])
    fig = curves_figure(table, key_columns(table))
    lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata())]
    best = max(lines, key=lambda line: line.get_linewidth())
    others = [line for line in lines if line is not best]
    assert len(others) == 3
    assert len({(line.get_linestyle(), line.get_marker()) for line in others}) == 3
    sizes = [line.get_markersize() for line in others]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 3
    assert all(line.get_zorder() > best.get_zorder() for line in others)


def test_optuna_parallel_coordinates_draw_the_worst_trial_visibly():
    from matplotlib.collections import LineCollection

    from runner.optuna_report import plot_figure

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: -abs(np.log10(t.suggest_float("lr", 1e-4, 1e-1, log=True)) + 2), n_trials=10)
    fig = plot_figure(study, "plot_parallel_coordinate")
    lines = next(c for ax in fig.axes for c in ax.collections if isinstance(c, LineCollection))
    worst = lines.to_rgba(np.array([lines.get_array().min()]))[0]
    luminance = 0.2126 * worst[0] + 0.7152 * worst[1] + 0.0722 * worst[2]
    assert luminance < 0.85  # Optuna's own "Blues" starts at about 0.97: white on white
