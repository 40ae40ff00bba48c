"""The collector meets other people's folders: each bad file gets one warning line naming it, the
rest is collected, and nothing is half-written. Also: refused runs, the one best-first order,
a merged Optuna sweep's best.json, the repeat command, and temporary files of a killed collector."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from runner.collect import collect_and_report
from tests.conftest import ROOT, run_cli
from tests.fake_runs import write_fake_run

BASE = {"lr": 0.01, "batch_size": 32, "epochs": 3}
MATH = "$\\frac{x$"  # matplotlib math that does not parse


def bad_runs(sweep: Path) -> dict[str, Path]:
    """Two good runs beside one run per kind of bad file; returns {kind: the bad file}."""
    write_fake_run(sweep / "0", {**BASE, "lr": 0.01}, 60.0, overrides=["lr=0.01"])
    write_fake_run(sweep / "1", {**BASE, "lr": 0.05, "model": {"name": MATH}}, 70.0, overrides=["lr=0.05"],
                   choices={"model": MATH})
    bad = {}
    for job, (kind, name, content) in enumerate([
            ("list summary", "summary.json", b"[1, 2]"),
            ("latin-1 summary", "summary.json", b'{"status": "completed", "best_val_acc": 99.0, "x": "\xe9"}'),
            ("text number", "summary.json", b'{"status": "completed", "best_val_acc": "high", "epochs_done": "x"}'),
            ("nan number", "summary.json", b'{"status": "completed", "best_val_acc": NaN, "best_epoch": 2.5}'),
            ("empty metrics", "metrics.csv", b""),
            ("column-less metrics", "metrics.csv", b"a,b\n1,2\n"),
            ("invalid yaml", "config.yaml", b"lr: [0.1\n"),
            ("status a number", "summary.json", b'{"status": 3, "best_val_acc": 99.0}'),
    ], start=2):
        run = write_fake_run(sweep / str(job), {**BASE, "lr": 0.001 * job}, 10.0 + job)
        if name == "metrics.csv":
            (run / "summary.json").unlink()  # a run still going: its epochs come from metrics.csv
        (run / name).write_bytes(content)
        bad[kind] = run / name
    # folder names no one planned for: bytes that are not UTF-8, a superscript digit, matplotlib math
    for name, acc in ((os.fsdecode(b"run\xff"), 30.0), ("\u00b2", 31.0), (MATH, 32.0)):
        write_fake_run(sweep / name, {**BASE, "lr": acc / 1000}, acc)
    return bad


def test_each_bad_file_gets_one_warning_and_the_rest_is_collected(tmp_path):
    sweep = tmp_path / "sweep"
    bad = bad_runs(sweep)
    proc = run_cli(str(sweep), module="runner.collect")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert all(line.startswith("warning: ") for line in lines), lines
    for kind, path in bad.items():
        assert sum(line.startswith(f"warning: {path}: ") for line in lines) == 1, (kind, lines)
    table = pd.read_csv(sweep / "results.csv", encoding="utf-8")
    assert len(table) == 13 and len((sweep / "results.txt").read_text().splitlines()) == 13
    by_job = table.set_index(table["job"].astype(str))
    assert by_job.loc["2", "status"] == "unreadable" and by_job.loc["3", "status"] == "unreadable"
    assert pd.isna(by_job.loc["4", "best_val_acc"]) and pd.isna(by_job.loc["4", "epochs_done"])
    assert pd.isna(by_job.loc["5", "best_val_acc"]) and pd.isna(by_job.loc["5", "best_epoch"])
    assert by_job.loc["6", "status"] == "running" and pd.isna(by_job.loc["6", "best_val_acc"])
    assert by_job.loc["9", "status"] == "unreadable"
    assert "run\\xff" in set(table["job"]) and "\u00b2" in set(table["job"]) and MATH in set(table["job"])
    best = json.loads((sweep / "best.json").read_text())
    assert best["best_value"] == 70.0 and best["command"] == "python -m runner lr=0.05"
    for picture in ("accuracy_by_param.png", "val_acc_curves.png"):  # `$` drawn as text, not math
        assert (sweep / picture).stat().st_size > 1000, picture
    page = (sweep / "report.html").read_text(encoding="utf-8")
    assert page.split("</table>")[0].count("<tr") == 14 and "run%FF/" in page  # the runs table
    assert not list(sweep.glob(".*.tmp"))


def test_out_that_is_a_file_is_one_line_and_writes_nothing(tmp_path):
    write_fake_run(tmp_path / "sweep" / "0", BASE, 50.0)
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    for out in (target, target / "below"):
        proc = run_cli(str(tmp_path / "sweep"), "--out", str(out), module="runner.collect")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: --out {out} "), proc.stderr
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["sweep", "taken.txt"]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["0"]


def test_a_refused_run_has_no_value_and_is_never_the_best(tmp_path):
    write_fake_run(tmp_path / "0", BASE, 40.0, overrides=["lr=0.01"])
    write_fake_run(tmp_path / "1", {**BASE, "lr": 0.05}, 95.0, status="refused", error="ConfigError: not allowed")
    write_fake_run(tmp_path / "2", {**BASE, "lr": 0.1}, 90.0, status="failed", error="RuntimeError: boom")
    write_fake_run(tmp_path / "3", {**BASE, "lr": 0.5}, 99.0, status="diverged")
    table = collect_and_report([tmp_path])
    assert pd.isna(table["best_val_acc"][1]) and table["status"][1] == "refused"
    assert (tmp_path / "results.txt").read_text().splitlines() == ["40.00", "refused", "90.00 failed", "99.00 diverged"]
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["best_job_num"] == 0 and best["statuses"] == {"completed": 1, "refused": 1, "failed": 1, "diverged": 1}
    # With nothing completed, a diverged run may be the best; a failed or refused one never is.
    write_fake_run(tmp_path / "x" / "0", BASE, 80.0, status="failed")
    write_fake_run(tmp_path / "x" / "1", BASE, 20.0, status="pruned")
    collect_and_report([tmp_path / "x"])
    assert json.loads((tmp_path / "x" / "best.json").read_text())["best_job_num"] == 1


def first_row_of_report(page: str) -> tuple[str, bool]:
    row = page.split("<tbody>")[1].split("</tr>")[0]
    return row, "class=best" in row


def test_merging_an_optuna_sweep_names_the_merged_tables_best(tmp_path):
    study_dir, grid = tmp_path / "study", tmp_path / "grid"
    write_fake_run(study_dir / "0", BASE, 50.0, overrides=["lr=0.01"])
    write_fake_run(grid / "0", {**BASE, "lr": 0.05}, 80.0, overrides=["lr=0.05"])
    study = {"study_name": "lenet_digits", "metric": "best_val_acc", "best_value": 50.0,
             "best_run_dir": str(study_dir / "0"), "best_job_num": 0, "trials": {"COMPLETE": 1}}
    (study_dir / "best.json").write_text(json.dumps(study))
    collect_and_report([study_dir, grid])
    best = json.loads((study_dir / "best.json").read_text())
    assert best["best_value"] == 80.0 and best["best_run_dir"] == str((grid / "0").resolve())
    assert best["study"] == study  # the study's own record is kept inside, not lost
    page = (study_dir / "report.html").read_text()
    assert "Best: <b>80.00</b>" in page
    row, highlighted = first_row_of_report(page)
    assert highlighted and "80.00" in row
    printed = pd.read_csv(study_dir / "results.csv")
    assert printed["best_val_acc"].max() == best["best_value"]
    # The study's sweep alone again: its own best.json is back, and agrees with its table.
    collect_and_report([study_dir])
    assert json.loads((study_dir / "best.json").read_text()) == study
    assert "Best: <b>50.00</b>" in (study_dir / "report.html").read_text()


def test_the_command_comes_from_what_the_run_recorded(tmp_path):
    # Recorded by the run itself in summary.json: wins over Hydra's file, which a later job rewrote.
    write_fake_run(tmp_path / "a" / "0", BASE, 50.0, overrides=["lr=0.5"], recorded=["lr=0.01", "epochs=3"])
    collect_and_report([tmp_path / "a"])
    assert json.loads((tmp_path / "a" / "best.json").read_text())["command"] == "python -m runner lr=0.01 epochs=3"
    # A folder from before such records: Hydra's file is used only while Hydra's config agrees with the run's.
    old = write_fake_run(tmp_path / "b" / "0", BASE, 50.0, overrides=["epochs=7"])
    (old / ".hydra" / "config.yaml").write_text("lr: 0.01\nbatch_size: 32\nepochs: 7\n")
    collect_and_report([tmp_path / "b"])
    best = json.loads((tmp_path / "b" / "best.json").read_text())
    assert best["command"] is None and "epochs" in best["command_note"] and "later job" in best["command_note"]
    assert "later job" in (tmp_path / "b" / "report.html").read_text()
    # A run resumed from another's checkpoint repeats as that run with its own overrides on top.
    first = write_fake_run(tmp_path / "c" / "first", BASE, 40.0, overrides=["batch_size=8", "epochs=2"],
                           recorded=["batch_size=8", "epochs=2"])
    write_fake_run(tmp_path / "c" / "second", BASE, 60.0,
                   recorded=[f"resume={first}/checkpoint.pth.tar", "epochs=5"])
    collect_and_report([tmp_path / "c" / "second"])
    best = json.loads((tmp_path / "c" / "second" / "best.json").read_text())
    assert best["command"] == "python -m runner batch_size=8 epochs=5" and "command_note" not in best


KILLED_COLLECTOR = """
import os, signal, sys
import common.io

replace = os.replace
def killed_before_the_rename(src, dst):
    if str(dst).endswith("results.csv"):
        os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` mid-write would
    replace(src, dst)
common.io.os.replace = killed_before_the_rename
from runner.collect import main
main([sys.argv[1]])
"""


def test_a_later_collect_removes_what_a_killed_collector_left(tmp_path):
    import subprocess
    import sys

    write_fake_run(tmp_path / "0", BASE, 50.0)
    proc = subprocess.run([sys.executable, "-c", KILLED_COLLECTOR, str(tmp_path)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    left = list(tmp_path.glob(".results.csv.*.tmp"))
    assert len(left) == 1 and not (tmp_path / "results.csv").exists()
    # best.json's temporary files are also the Optuna report's: only one older than a minute is stale
    fresh, old = tmp_path / ".best.json.fresh.tmp", tmp_path / ".best.json.old.tmp"
    for path in (fresh, old):
        path.write_text("{")
    os.utime(old, (time.time() - 120, time.time() - 120))
    mine = tmp_path / ".notes.tmp"
    mine.write_text("the user's")
    collect_and_report([tmp_path])
    assert not left[0].exists() and not old.exists() and fresh.exists() and mine.exists()
    assert (tmp_path / "results.csv").is_file()


@pytest.mark.parametrize("names", [["$\\frac{x$", "b"], ["\u00b2", "$"]])
def test_analyze_figures_draw_class_names_as_text(tmp_path, names):
    import numpy as np

    from runner.analyze.figures import Cell, confusion_figure, image_grid, robustness_figure

    confusion_figure(np.eye(2), names, tmp_path / "c.png", title=names[0])
    image_grid([Cell(np.zeros((4, 4)), title=n) for n in names], 2, tmp_path / "g.png", title=names[0],
               row_labels=[names[1]])
    robustness_figure([0.0, 0.1], [90.0, 50.0], tmp_path / "r.png", title=names[0])
    assert all((tmp_path / f).stat().st_size > 0 for f in ("c.png", "g.png", "r.png"))
