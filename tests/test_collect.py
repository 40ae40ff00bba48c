"""Grids, the collector's tables, and the course study's order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest

from runner.collect import collect_and_report
from tests.conftest import ROOT, run_cli

COURSE = ["default", "batch8", "batch16", "lr0.05", "lr0.01", "epochs20", "epochs5"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("grid")
    proc = run_cli("-m", "lr=0.01,0.05", "batch_size=16,32", "epochs=1", "tensorboard=false",
                   f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return sweep, proc


def test_a_grid_of_four_gives_four_rows_and_four_lines(grid):
    sweep, proc = grid
    table = pd.read_csv(sweep / "results.csv")
    assert len(table) == 4 and list(table["job"]) == [0, 1, 2, 3]
    # Hydra's basic sweeper varies the last key fastest.
    assert list(table["lr"]) == [0.01, 0.01, 0.05, 0.05]
    assert list(table["batch_size"]) == [16, 32, 16, 32]
    assert "optimizer.lr" not in table.columns  # an interpolated copy of lr is not a second column
    assert set(table["status"]) == {"completed"}
    lines = (sweep / "results.txt").read_text().splitlines()
    assert lines == [f"{acc:.2f}" for acc in table["best_val_acc"]]
    assert (sweep / "accuracy_by_param.png").exists()
    # The Markdown table on the terminal is sorted by accuracy, best first.
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    printed = [float(line.strip("|").split("|")[header.index("best_val_acc")]) for line in rows[2:]]
    assert printed == [round(acc, 2) for acc in sorted(table["best_val_acc"], reverse=True)]


def test_crashed_and_diverged_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    proc = run_cli("-m", "lr=0.01,1e12", "model.image_size=32,8", "epochs=2", "tensorboard=false",
                   f"hydra.sweep.dir={tmp_path}")
    # every job ran; the two that could not train make the command fail, in one line saying where to look
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("error: 2 of 4 jobs failed or were refused (2 failed); first, job 1: ConfigError: "
                           "dataset.image_size=8 is too small"), last
    assert f"the reasons are in {tmp_path}/.jobs/<job>.json and {tmp_path}/results.csv" in last
    assert "4 jobs: 1 completed, 1 diverged, 2 failed" in proc.stdout
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["status"]) == ["completed", "failed", "diverged", "failed"]
    assert "at least 16x16" in table["error"][1]
    lines = (tmp_path / "results.txt").read_text().splitlines()
    assert len(lines) == 4 and lines[1] == "failed" and lines[2].endswith("diverged") and lines[3] == "failed"
    assert float(lines[0]) > 0


def test_collector_reads_a_half_finished_sweep(grid, tmp_path, capsys):
    sweep, _ = grid
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    (copy / "1" / "summary.json").unlink()  # killed hard before writing its summary
    shutil.rmtree(copy / "3")
    (copy / "3" / ".hydra").mkdir(parents=True)  # launched, nothing written yet
    shutil.copy(sweep / "3" / ".hydra" / "config.yaml", copy / "3" / ".hydra" / "config.yaml")
    table = collect_and_report([copy])
    assert list(table["status"]) == ["completed", "running", "completed", "running"]
    metrics = pd.read_csv(copy / "1" / "metrics.csv")
    assert table["best_val_acc"][1] == pytest.approx(metrics["val_acc"].max())
    assert pd.isna(table["best_val_acc"][3])
    assert (copy / "results.txt").read_text().splitlines()[3] == "running"
    assert "running" in capsys.readouterr().out


def test_collect_cli_on_a_single_run_and_on_nonsense(grid, tmp_path):
    sweep, _ = grid
    proc = run_cli(str(sweep / "0"), "--out", str(tmp_path), module="runner.collect")
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "results.txt").read_text().splitlines()) == 1
    proc = run_cli(str(tmp_path / "missing"), module="runner.collect")
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


def test_course_files_set_what_their_names_say(make_cfg):
    expected = {"default": (32, 0.01, 10), "batch8": (8, 0.01, 10), "batch16": (16, 0.01, 10),
                "lr0.05": (32, 0.05, 10), "lr0.01": (32, 0.01, 10), "epochs20": (32, 0.01, 20),
                "epochs5": (32, 0.01, 5)}
    for name, (batch, lr, epochs) in expected.items():
        cfg = make_cfg(f"course={name}")
        assert (cfg.batch_size, cfg.lr, cfg.epochs) == (batch, lr, epochs), name
    # On MiniPlaces the course default is the course's own lr.
    assert make_cfg("course=default", "dataset=miniplaces").lr == 0.001


def test_sweep_sh_runs_the_seven_configurations_in_the_course_order(tmp_path):
    env = {**os.environ, "SWEEP_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "sweep.sh"), "epochs=1", "tensorboard=false"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{tmp_path}/results.txt" in proc.stdout
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["course"]) == COURSE
    assert list(table["batch_size"]) == [32, 8, 16, 32, 32, 32, 32]
    assert list(table["lr"]) == [0.01, 0.01, 0.01, 0.05, 0.01, 0.01, 0.01]
    assert len((tmp_path / "results.txt").read_text().splitlines()) == 7
    assert json.loads((tmp_path / "6" / "summary.json").read_text())["status"] == "completed"
