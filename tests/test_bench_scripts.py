"""bench/make_data.py and bench/course_loop.py work from the checkout alone (no ../shared).

Not a timing test: it checks that the data writer gives the same files whatever the number of
processes, that the course loop trains on them and prints its JSON line, and that bad options
exit 2 with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def make_data(root: Path, processes: int) -> None:
    proc = run_script("bench/make_data.py", str(root), "--classes", "4", "--train-per-class", "8",
                      "--val-per-class", "2", "--size", "32", "--processes", str(processes))
    assert proc.returncode == 0, proc.stderr


def test_make_data_is_the_same_whatever_the_process_count(tmp_path: Path) -> None:
    make_data(tmp_path / "one", 1)
    make_data(tmp_path / "two", 2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".jpg"]) == 4 * 8 + 4 * 2
    assert (tmp_path / "one" / "train.txt").read_text().splitlines()[0] == "train/a/abbey/00000001.jpg 0"
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    again = run_script("bench/make_data.py", str(tmp_path / "one"))
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'one'} already holds a data set (train.txt); pass another ROOT"]


def test_course_loop_trains_one_epoch_and_repeats_with_its_seed(tmp_path: Path) -> None:
    make_data(tmp_path, 2)
    runs = []
    for _ in range(2):  # the second run reads the decode cache the first one wrote
        proc = run_script("bench/course_loop.py", str(tmp_path), "--epochs", "1", "--batch-size", "8",
                          "--lr", "0.01", "--device", "cpu")
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first = runs[0]
    assert {"epochs", "batch_size", "lr", "train_images_per_s", "epoch_s", "best_val_acc", "load_s",
            "last_epoch_images_per_s", "workers", "device"} <= set(first)
    assert first["epochs"] == 1 and first["batch_size"] == 8 and first["device"] == "cpu"
    assert first["train_images_per_s"] > 0 and 0.0 <= first["best_val_acc"] <= 100.0
    assert (tmp_path / "cached_train_course_loop_32px.npz").exists()
    assert runs[1]["best_val_acc"] == first["best_val_acc"]


def test_bench_scripts_refuse_bad_options_in_one_line(tmp_path: Path) -> None:
    proc = run_script("bench/course_loop.py", str(tmp_path))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "bench/make_data.py" in proc.stderr
    proc = run_script("bench/gpu.py", "--out", str(tmp_path / "out"), "--only", "throughput,speed")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --only throughput,speed: pick from throughput,ablation,resnet,study,grid"]
