"""An Optuna study's outcome in its sweep dir: best.json, optimization_results.yaml and plots.

Written by the sweeper (runner/search/sweeper.py) at the end of every search, and on demand:

    python -m runner.optuna_report SWEEP_DIR                    # the study in SWEEP_DIR/optuna.db
    python -m runner.optuna_report SWEEP_DIR --storage postgresql://host/db --study-name lenet_digits

best.json                       best value, parameters, trial number, job number and run folder,
                                its overrides and the command that repeats it (the same form as
                                a grid's best.json, runner/results/best_run.py), plus the trials by state
optimization_results.yaml       the same best parameters/value in the Optuna plugin's format
optuna_history.png              optimisation history          } Optuna's matplotlib plots (no
optuna_parallel_coordinate.png  parallel coordinates          } plotly needed); a plot that can't
                                (Optuna's Blues colour map without its near-white end, so the
                                worst trial's line stays visible)
optuna_param_importances.png    parameter importance (fANOVA) } be made is skipped with a log line

A study of several objectives (`objective=[val_acc,params_m]`, runner/results/pareto.py) has no one best
trial: best.json holds its Pareto front (`pareto_front`: each of `study.best_trials` with its
values, parameters, job folder and repeat command), optimization_results.yaml the plugin's
`solutions`, and the plots are optuna_pareto_front.png and each objective's importances.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from common.errors import ConfigError, entry_point
from common.io import atomic_save_figure, atomic_write_text
from runner.results.read import BEST_FILE
from runner.search.db import display_url, one_line_errors, open_existing, storage_url

log = logging.getLogger(__name__)

PLOTS = {
    "optuna_history.png": "plot_optimization_history",
    "optuna_parallel_coordinate.png": "plot_parallel_coordinate",
    "optuna_param_importances.png": "plot_param_importances",
}
# A study of several objectives (runner/results/pareto.py): the Pareto front, and each objective's importances.
FRONT_PLOTS = {
    "optuna_pareto_front.png": "plot_pareto_front",
    "optuna_param_importances.png": "plot_param_importances",
}


def best_summary(study: Any, storage: Any = None) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts = {"trials": dict(Counter(t.state.name for t in trials)),
              "statuses": dict(Counter(str(t.user_attrs.get("status", "n/a")) for t in trials
                                       if t.state != TrialState.WAITING and "duplicate_of" not in t.user_attrs))}
    if len(study.directions) > 1:  # several objectives: the Pareto front instead of one best trial
        from runner.results.pareto_report import study_front

        return {"study_name": study.study_name, "storage": display_url(storage), **study_front(study), **counts}
    out: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": display_url(storage),
        "metric": "best_val_acc",
        "direction": study.direction.name.lower(),
        "best_value": None, "best_params": None, "best_trial": None, "best_job_num": None,
        "best_run_dir": None, "best_status": None, "best_overrides": None, "command": None, **counts,
    }
    if complete:
        best = study.best_trial
        out.update(best_value=best.value, best_params=best.params, best_trial=best.number,
                   best_job_num=best.user_attrs.get("job_num"), best_run_dir=best.user_attrs.get("run_dir"),
                   best_status=best.user_attrs.get("status"))
        if out["best_run_dir"] and Path(out["best_run_dir"]).is_dir():
            from runner.results.repeat_command import repeat_record

            out.update(repeat_record(out["best_run_dir"]))
    return out


def write_report(study: Any, out_dir: str | os.PathLike, storage: Any = None, plots: bool = True) -> dict[str, Any]:
    """Write best.json, optimization_results.yaml and the plots into `out_dir`; log the best trial."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = best_summary(study, storage)
    if "pareto_front" in summary:
        _log_front(summary, out_dir)
    elif summary["best_trial"] is None:
        log.warning("Optuna study '%s': no completed trial yet, so no best parameters (trials: %s)",
                    summary["study_name"], summary["trials"])
    else:
        log.info("Best value: %.4f (trial %d, job %s, %s)", summary["best_value"], summary["best_trial"],
                 summary["best_job_num"], summary["best_run_dir"])
        log.info("Best parameters: %s", " ".join(f"{k}={v}" for k, v in summary["best_params"].items()))
        atomic_write_text(out_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(
            {"name": "optuna", "best_params": summary["best_params"], "best_value": summary["best_value"]})))
    if plots:
        summary["plots"] = write_plots(study, out_dir)
    atomic_write_text(out_dir / BEST_FILE, json.dumps(summary, indent=2, default=str) + "\n")
    log.info("Study summary: %s", out_dir / BEST_FILE)
    return summary


def _log_front(summary: dict[str, Any], out_dir: Path) -> None:
    """Log a study's Pareto front and write it to optimization_results.yaml in the plugin's form."""
    front = summary["pareto_front"]
    log.info("Pareto front of %s: %d trial(s)", ", ".join(summary["objectives"]), len(front))
    for m in front:
        log.info("    trial %d (job %s): %s; %s", m["trial"], m["job_num"],
                 " ".join(f"{k}={v:.4g}" for k, v in m["values"].items()),
                 " ".join(f"{k}={v}" for k, v in m["params"].items()))
    atomic_write_text(out_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(
        {"name": "optuna", "solutions": [{"params": m["params"], "values": list(m["values"].values())}
                                          for m in front]})))


def write_plots(study: Any, out_dir: Path) -> list[str]:
    """Optuna's matplotlib plots as PNG files; returns the files written, skips (and logs) the rest."""
    from optuna.trial import TrialState

    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    written = []
    for name, function in (PLOTS if len(study.directions) == 1 else FRONT_PLOTS).items():
        # Each needs completed trials: none to draw a history, two to fit an importance model.
        needed = 2 if function == "plot_param_importances" else 1
        if n_complete < needed:
            log.info("Skipping %s: %d completed trial(s), it needs %d", name, n_complete, needed)
            continue
        try:
            _plot(study, function, out_dir / name)
            written.append(name)
        except Exception as e:  # e.g. importance when every trial has the same parameters
            log.info("Skipping %s: %s: %s", name, type(e).__name__, e)
    return written


def _plot(study: Any, function: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    # Optuna's plots switch matplotlib to its ggplot style for good; keep that inside this plot.
    with plt.style.context("default"):
        figure = plot_figure(study, function)
        try:
            figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
            figure.tight_layout()
            atomic_save_figure(figure, path, dpi=100)
        finally:
            plt.close(figure)


def plot_figure(study: Any, function: str) -> Any:
    """One of Optuna's matplotlib plots as a Figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import optuna.visualization.matplotlib as ovm
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # the matplotlib backend is "experimental"
        warnings.simplefilter("ignore", UserWarning)  # e.g. "n trials are skipped" for FAIL trials
        kwargs = {}
        if function == "plot_param_importances":  # Optuna's default fANOVA, seeded: the same study, the same plot
            from optuna.importance import FanovaImportanceEvaluator

            kwargs["evaluator"] = FanovaImportanceEvaluator(seed=0)
        axes = getattr(ovm, function)(study, **kwargs)
    figure = np.ravel(axes)[0].figure
    if function == "plot_parallel_coordinate":
        darken_lightest_lines(figure)
    return figure


def darken_lightest_lines(figure: Any, start: float = 0.35) -> None:
    """Optuna draws parallel coordinates in "Blues", whose worst end is near-white on white:
    keep the map but start it at `start`, so every trial's line shows (the colour bar follows)."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap
    import numpy as np

    for ax in figure.axes:
        for collection in ax.collections:
            if isinstance(collection, LineCollection) and collection.get_array() is not None:
                cmap = collection.get_cmap()
                light_end = np.linspace(start, 1.0, 256) if not cmap.name.endswith("_r") else np.linspace(0.0, 1 - start, 256)
                collection.set_cmap(ListedColormap(cmap(light_end), name=f"{cmap.name}_visible"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.optuna_report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="where the report goes (and the default sqlite storage)")
    parser.add_argument("--storage", help="storage URL (default: sqlite:///SWEEP_DIR/optuna.db)")
    parser.add_argument("--study-name", help="study to report (default: the storage's only study)")
    parser.add_argument("--no-plots", action="store_true", help="write best.json only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    key = "--storage" if args.storage else ""
    try:
        storage = storage_url(args.sweep_dir, args.storage)
        opened = open_existing(storage, key)
        name = args.study_name
        if name is None:
            names = optuna.get_all_study_names(opened)
            if len(names) != 1:
                print(f"error: {display_url(storage)} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                      "pick one with --study-name", file=sys.stderr)
                return 2
            name = names[0]
        with one_line_errors(storage, key):
            study = optuna.load_study(study_name=name, storage=opened)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyError:  # Optuna's "Record does not exist"
        print(f"error: --study-name {name}: {display_url(storage)} holds no study of that name; leave it out to "
              "report the storage's only study", file=sys.stderr)
        return 2
    write_report(study, args.sweep_dir, storage, plots=not args.no_plots)
    return 0


if __name__ == "__main__":
    with entry_point():  # anything unexpected: one line, the traceback in a file
        sys.exit(main())
