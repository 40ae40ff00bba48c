"""bench/fidelity.py and bench/fidelity_replay.py at a tiny size: the runner against the course loop.

Not a fidelity measurement (two seeds of one epoch on 64 images say nothing about accuracy): it
checks that the bench trains both sides per seed and prints both results with the test, and that
the runner's step, fed the course loop's own batches and flips, computes the course loop's
training losses (same data decoding, normalisation, initial weights, loss and optimizer).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 train / 16 val 32x32 images in 4 classes, in the MiniPlaces layout."""
    root = tmp_path_factory.mktemp("fidelity") / "miniplaces"
    proc = run_script("bench/make_data.py", str(root), "--classes", "4", "--train-per-class", "16",
                      "--val-per-class", "4", "--size", "32", "--processes", "1")
    assert proc.returncode == 0, proc.stderr
    return root


def test_fidelity_trains_both_per_seed_and_prints_both_results(data: Path) -> None:
    proc = run_script("bench/fidelity.py", "--root", str(data), "--classes", "4", "--train-images", "64",
                      "--val-images", "16", "--epochs", "1", "--seeds", "2", "--first-seed", "5")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["seeds"] == [5, 6] and figures["replay"] is False
    assert len(figures["course"]) == len(figures["runner"]) == 2
    assert all(0.0 <= acc <= 100.0 for acc in figures["course"] + figures["runner"])
    course, runner = figures["course"], figures["runner"]
    assert f"course loop: {sum(course) / 2:.2f} ± {figures['course_std']:.2f} (n=2)" in lines
    assert f"runner: {sum(runner) / 2:.2f} ± {figures['runner_std']:.2f} (n=2)" in lines
    assert any(line.split()[:3] == ["5", f"{course[0]:.2f}", f"{runner[0]:.2f}"] for line in lines)  # per-seed pairs
    assert any(line.startswith("Welch's t-test: ") for line in lines)


def test_runner_step_on_the_course_loops_batches_gives_its_losses(data: Path) -> None:
    proc = run_script("bench/fidelity_replay.py", str(data), "--epochs", "2", "--seed", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    course, runner = result["course_train_loss"], result["runner_train_loss"]
    assert len(course) == len(runner) == 2 and course[0] != course[1]  # two epochs that trained
    assert runner == pytest.approx(course, rel=1e-5, abs=0)  # float rounding only
    assert result["runner_best_val_acc"] == result["course_best_val_acc"]


def test_fidelity_refuses_bad_sizes_in_one_line(tmp_path: Path) -> None:
    proc = run_script("bench/fidelity.py", "--root", str(tmp_path / "none"), "--classes", "4",
                      "--train-images", "10", "--val-images", "8")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --train-images 10 and --val-images 8 must be multiples of --classes 4 (the same number of images "
        "per class)"]
    assert not (tmp_path / "none").exists()  # refused before any data was written
