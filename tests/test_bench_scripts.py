"""bench/make_data.py, bench/course_loop.py and bench/gpu_check.sh work from the checkout alone (no course files).

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


def test_gpu_check_dry_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    """bench/gpu_check.sh --tiny: the whole GPU check on the CPU with tiny sizes (the mechanics, not
    figures): step 1 (CUDA tests) skipped with its reason, steps 2-4 each leave a table with its
    reference rows, and check.md sums them up."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", str(tmp_path / "out"), "--tiny", "--data",
                           str(tmp_path / "data")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    check = (out / "check.md").read_text()
    assert "| 1. CUDA tests | skipped: --tiny runs on the CPU" in check
    for step in ("2. LeNet throughput", "3. 8-point lr grid", "4. ResNet-50 32px"):
        assert f"| {step} | done" in check, check
    rows = {name: json.loads((out / name / "figures.json").read_text())["rows"] for name in ("lenet", "grid", "resnet")}
    assert all(row.get("error") is None for table in rows.values() for row in table), rows
    assert [r["label"] for r in rows["lenet"]] == ["course loop, workers 0", "runner eager"]  # no captured row on a CPU
    assert rows["lenet"][1]["step_path"] == "eager" and rows["lenet"][1]["vs_course"] > 0
    fused, basic = rows["grid"]
    assert fused["label"].endswith("fused launcher") and fused["ratio"] == basic["wall_s"] / fused["wall_s"]
    assert fused["trials"] == basic["trials"] == 2 and fused["trial_accs"].startswith("0.001: ")
    assert [r["label"] for r in rows["resnet"]] == ["lenet 32px eager"]
    for name in ("lenet", "grid", "resnet"):
        assert "figures: " in (out / "logs" / f"{name}.log").read_text()  # each step's log, to its end


def test_gpu_check_refuses_an_unknown_option_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", "bench/gpu_check.sh", str(tmp_path), "--fast"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: unknown option --fast; pass OUT [--tiny] [--data DIR]"]


def test_the_python_that_sweep_sh_runs_keeps_a_virtual_environment(tmp_path: Path) -> None:
    """bench/gpu.py's study piece runs `bash sweep.sh`, which calls `python`: from inside a virtual
    environment that must be the environment's python with its packages (sys.prefix the venv's),
    not the base interpreter a symlink in a temporary folder would resolve to."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    probe = ("import subprocess, sys; from pathlib import Path; sys.path.insert(0, 'bench');"
             "from gpu_runs import python_first_on_path;"
             f"env = python_first_on_path(Path({str(tmp_path)!r}));"
             "print(subprocess.run(['python', '-c', 'import sys; print(sys.prefix)'], env=env,"
             " capture_output=True, text=True, check=True).stdout.strip())")
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == venv.resolve()


def test_gpu_bench_exits_non_zero_when_a_run_fails(tmp_path: Path) -> None:
    """A piece whose runs fail still writes its table, then exits 1 with one line naming the first."""
    proc = run_script("bench/gpu.py", "--out", str(tmp_path / "out"), "--device", "cpu", "--root", str(tmp_path / "data"),
                      "--train-per-class", "2", "--val-per-class", "1", "--only", "grid", "--grid-points", "2",
                      "--epochs", "1", "model=nosuch")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: 2 of 2 runs failed; the first, 2-point lr grid, fused launcher: exit 2: ")
    rows = json.loads((tmp_path / "out" / "figures.json").read_text())["rows"]
    assert len(rows) == 2 and all("model/nosuch" in row["error"] for row in rows)
