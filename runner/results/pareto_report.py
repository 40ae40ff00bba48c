"""A Pareto front shown: best.json's front, report.html's head for it, and a grid's picture of it
(pareto_front.png).

The fronts themselves (non-dominated sorting) are runner/results/pareto.py's; an Optuna study's picture is
Optuna's own (runner/optuna_report.py, optuna_pareto_front.png).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from runner.config.objective import direction, summary_column
from runner.results.pareto import FRONT, front_run_dirs, objective_fields, study_objectives, table_objectives
from runner.results.ranking import plain_cell, ranked, same_folder
from runner.results.read import FRONT_PICTURE, printable
from runner.results.repeat_command import repeat_record


def front_html(best: dict[str, Any]) -> str:
    """report.html's head for a front: what it is, and each member's values and command."""
    objectives = best.get("objectives") or []
    members = [m for m in best.get("pareto_front") or [] if isinstance(m, dict)]
    if not members:
        return "<p>No run has finished with every objective's value yet: no Pareto front.</p>"
    ways = ", ".join(f"{_text(o)} ({'higher' if d == 'maximize' else 'lower'} is better)"
                     for o, d in zip(objectives, best.get("directions") or []))
    rows = []
    for m in members:
        values = "".join(f'<td class="num">{_number(m.get("values", {}).get(o))}</td>' for o in objectives)
        rows.append(f"<tr><td>{_text(m.get('job_num'))}</td>{values}<td><code>{_text(m.get('command') or '')}"
                    f"</code></td></tr>")
    head = "".join(f"<th>{_text(o)}</th>" for o in objectives)
    return (f"<p>Pareto front: <b>{len(members)}</b> run(s) that no other run beats in every objective; "
            f"objectives: {ways}. Highlighted in the table below; best.json lists them.</p>\n"
            f"<table>\n<thead><tr><th>job</th>{head}<th>repeat it</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>")


def _text(value: Any) -> str:
    return html.escape(printable(value))


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _text(value)


def front_figure(table: pd.DataFrame) -> Any:
    """The first two objectives of every run with values, the front marked and joined; None without a front."""
    from matplotlib.figure import Figure

    objectives = table_objectives(table)
    if FRONT not in table.columns or not objectives:
        return None
    done = table[table[FRONT].notna()]
    if done.empty:
        return None
    x_name, y_name = objectives[0], objectives[1]
    x = pd.to_numeric(done[summary_column(x_name)]).astype(float)
    y = pd.to_numeric(done[summary_column(y_name)]).astype(float)
    on_front = (done[FRONT] == 0).to_numpy(dtype=bool)
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    ax.scatter(x[~on_front], y[~on_front], color="0.55", alpha=0.7, label="dominated run")
    order = x[on_front].sort_values().index
    ax.plot(x[order], y[order], color="tab:red", marker="o", linewidth=1.5, zorder=3, label="Pareto front (front 0)")
    for index in order:
        ax.annotate(printable(f"job {done.loc[index, 'job']}"), (x[index], y[index]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    arrow = {"maximize": "higher is better", "minimize": "lower is better"}
    ax.set_xlabel(f"{x_name} ({arrow[direction(x_name)]})")
    ax.set_ylabel(f"{y_name} ({arrow[direction(y_name)]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def write_front_plot(table: pd.DataFrame, out: Path, best: dict[str, Any] | None) -> list[str]:
    """pareto_front.png for a grid's front; none where best.json is an Optuna study's (its own
    optuna_pareto_front.png shows the front) or there is no front."""
    import matplotlib.style

    from common.io import atomic_save_figure
    from runner.results.plots import DPI, PLAIN_TEXT

    if isinstance(best, dict) and "study_name" in best:
        return []
    with matplotlib.style.context("default"), matplotlib.rc_context(PLAIN_TEXT):
        fig = front_figure(table)
        if fig is None:
            return []
        atomic_save_figure(fig, out / FRONT_PICTURE, dpi=DPI)
    return [FRONT_PICTURE]


# ------------------------------------------------------- best.json's front, ranked tables
def in_table_order(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """results.csv's rows: by front where there is one (runner/results/best_run.py's `ranked`), else launch order."""

    return ranked(table, metric) if FRONT in table.columns else table



# ---------------------------------------------------------------------- best.json
def front_record(table: pd.DataFrame, key_columns: list[str]) -> dict[str, Any]:
    """best.json's content for a table with a front: the non-dominated finished runs, best first."""

    objectives = table_objectives(table)
    front = ranked(table, summary_column(objectives[0])) if objectives else table
    front = front[front[FRONT].notna() & (front[FRONT] == 0)] if FRONT in front.columns else front.iloc[:0]
    members = []
    for _, row in front.iterrows():
        member = {"values": {o: float(row[summary_column(o)]) for o in objectives},
                  "params": {printable(k): plain_cell(row[k]) for k in key_columns}, "job_num": plain_cell(row["job"]),
                  "run_dir": printable(Path(row["run_dir"]).resolve()), "status": row["status"],
                  "best_epoch": plain_cell(row["best_epoch"])}
        if "origin" in row:
            member["origin"] = printable(row["origin"])
        repeat = repeat_record(row["run_dir"])
        member.update(overrides=repeat.pop("best_overrides"), **repeat)
        members.append(member)
    return {**objective_fields(objectives), "pareto_front": members}



def study_front(study: Any) -> dict[str, Any]:
    """best.json's front for an Optuna study of several objectives: its `best_trials`, each with its
    values, parameters, job folder and the command that repeats it, best first by the first objective."""

    objectives = study_objectives(study)
    sign = -1.0 if study.directions[0].name.lower() == "maximize" else 1.0
    members = []
    for t in sorted(study.best_trials, key=lambda t: (sign * t.values[0], t.number)):
        run_dir = t.user_attrs.get("run_dir")
        member = {"values": dict(zip(objectives, t.values)), "params": t.params, "trial": t.number,
                  "job_num": t.user_attrs.get("job_num"), "run_dir": run_dir, "status": t.user_attrs.get("status"),
                  "overrides": None, "command": None}
        if run_dir and Path(run_dir).is_dir():
            repeat = repeat_record(run_dir)
            member.update(overrides=repeat.pop("best_overrides"), **repeat)
        members.append(member)
    fields = objective_fields(objectives)
    fields["directions"] = [d.name.lower() for d in study.directions]  # the study's own
    return {**fields, "pareto_front": members}



def same_best(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two best.json records name the same best run, or the same front."""

    if "pareto_front" not in a and "pareto_front" not in b:
        return same_folder(a.get("best_run_dir"), b.get("best_run_dir"))
    if ("pareto_front" in a) != ("pareto_front" in b):
        return False
    mine, theirs = front_run_dirs(a), front_run_dirs(b)
    return len(mine) == len(theirs) and all(any(same_folder(x, y) for y in theirs) for x in mine)

