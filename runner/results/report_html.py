"""report.html: a sweep's results as one self-contained page, for looking rather than reading.

Written by the collector beside results.csv: the best run and the command that repeats it, the
table sorted by accuracy (best first, highlighted) with a relative link to each run folder, and
every picture in the folder (the collector's and, for a search, Optuna's) inlined as base64
`data:` URIs, so the one file can be mailed or moved. Every value is HTML-escaped. The only
script sets `data-images-loaded` on <body> once the page has loaded ("all" when every picture
decoded), which lets a headless browser check the page (tests/test_report_html.py).
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from common.io import atomic_write_text
from runner.results.read import ACCURACY_PICTURE, CURVES_PICTURE, FRONT_PICTURE, REPORT_FILE, printable

# Pictures shown when present in the folder, in this order; the collector's come first.
PICTURES = [FRONT_PICTURE, "optuna_pareto_front.png", ACCURACY_PICTURE, CURVES_PICTURE, "optuna_history.png",
            "optuna_parallel_coordinate.png", "optuna_param_importances.png"]
HIDDEN_COLUMNS = {"run_dir", "train_s", "val_s", "replicate_dirs"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fde8e8; font-weight: 600; }
code { background: #f4f4f4; padding: 0.1em 0.3em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""
SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images-loaded", ok ? "all" : "missing");
  document.body.setAttribute("data-image-count", String(images.length));
});
"""


def write_report(table: pd.DataFrame, out: Path, plots: list[str], best: dict[str, Any] | None,
                 sections: list[str] | None = None) -> Path:
    """Write out/report.html and return its path. The table is in best.json's order (its first row
    is `best`'s run, highlighted); every text is made writable (runner/results/read.py's `printable`).
    `sections`: HTML blocks shown after the table (the parameter table, runner/results/param_table.py)."""
    pictures = [name for name in PICTURES if (out / name).exists()]
    what = "configs" if "replicate_dirs" in table.columns else "runs"  # runs grouped by config (replicate_stats)
    parts = [f"<h1>{len(table)} {what} in {_text(out.resolve().name)}</h1>", _best_section(best),
             f"<h2>{what.capitalize()}, best first</h2>", _table(table, out, best), *(sections or [])]
    for name in pictures:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        parts.append(f'<h2>{html.escape(name)}</h2>\n<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_text(out)}: results</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
    path = out / REPORT_FILE
    atomic_write_text(path, page)
    return path


def _best_section(best: dict[str, Any] | None) -> str:
    if best and "pareto_front" in best:  # several objectives: the front, not one best (runner/results/pareto.py)
        from runner.results.pareto_report import front_html

        return front_html(best)
    if not best or best.get("best_value") is None:
        return "<p>No run has a validation accuracy yet.</p>"
    value = best["best_value"]
    value = f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _text(value)
    if best.get("best_n") is not None:  # a config's mean over replicates (runner/results/replicate_compare.py)
        std = best.get("best_std")
        value += (f" ± {std:.2f}" if isinstance(std, (int, float)) else "") + f", n={_text(best['best_n'])}"
    lines = [f"<p>Best: <b>{value}</b> (job {_text(best.get('best_job_num'))}, "
             f"{_text(best.get('best_status'))})</p>"]
    if "not_distinguishable" in best:
        lines.append(_compared(best))
    if best.get("command"):
        lines.append(f"<p>Repeat it: <code>{_text(best['command'])}</code></p>")
    if best.get("command_note"):
        lines.append(f"<p>{_text(best['command_note'])}</p>")
    return "\n".join(lines)


def _compared(best: dict[str, Any]) -> str:
    """Which other configs the best one's replicates cannot tell apart from it."""
    def name(entry: dict[str, Any]) -> str:
        params = ", ".join(f"{k}={v}" for k, v in (entry.get("params") or {}).items())
        return f"job {entry.get('job')}" + (f" ({params})" if params else "")

    same, few = best.get("not_distinguishable") or [], best.get("not_enough_replicates") or []
    text = (f"Not distinguishable from it ({best.get('comparison')}): "
            + ("; ".join(name(e) for e in same) if same else "none") + ".")
    if few:
        text += " Not enough replicates to tell (fewer than 2 on a side): " + "; ".join(name(e) for e in few) + "."
    return f"<p>{_text(text)}</p>"


def _text(value: Any) -> str:
    return html.escape(printable(value))


def _table(table: pd.DataFrame, out: Path, best: dict[str, Any] | None) -> str:
    from runner.results.ranking import ranked, same_folder
    from runner.results.pareto import front_run_dirs

    metric = (best or {}).get("metric")
    metric = metric if isinstance(metric, str) and metric in table.columns else "best_val_acc"
    shown = ranked(table, metric)
    std = f"{metric}_std"  # shown inside the mean's cell
    columns = [c for c in shown.columns
               if c not in HIDDEN_COLUMNS and c != std and not (c == "error" and shown[c].isna().all())]
    head = "".join(f"<th>{_text(c)}</th>" for c in [*columns, "run folder"])
    rows = []
    for _, row in shown.iterrows():
        cells = "".join(_cell(c, row[c], row[std] if c == metric and std in row else None) for c in columns)
        run_dir = Path(row["run_dir"]).resolve()
        link = os.path.relpath(run_dir, out.resolve())
        # the link as the file system spells it (bytes that are not UTF-8 percent-encoded)
        href = quote(os.fsencode(link))
        cells += f'<td><a href="{html.escape(href)}/">{_text(link)}</a></td>'
        is_best = any(same_folder(run_dir, d) for d in front_run_dirs(best))  # the best run, or the front
        rows.append(f'<tr{" class=best" if is_best else ""}>{cells}</tr>')
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _cell(column: str, value: Any, std: Any = None) -> str:
    if column in ("values", "seeds") and isinstance(value, list):  # a config's replicates (runner/results/replicate_stats.py)
        return f"<td>{_text(', '.join(f'{v:.2f}' if isinstance(v, float) else str(v) for v in value))}</td>"
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "<td></td>"
    if isinstance(value, float):
        text = (f"{value:.4g}" if column == "params_m" else f"{value:.2f}" if column.startswith("best_")
                or column.endswith("_s") else f"{value:g}")  # params_m: small models differ in the third decimal
        if isinstance(std, float) and not math.isnan(std):  # mean ± std over a config's replicates
            text += f" ± {std:.2f}"
        return f'<td class="num">{text}</td>'
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return f'<td class="num">{value}</td>'
    return f"<td>{_text(value)}</td>"
