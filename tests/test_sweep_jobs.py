"""A sweep's jobs, each counted once: refused jobs leave a record and make the command fail in one
line; diverged runs are results; the repeat command is the best run's own, also after a later job
was sent to its folder and Hydra rewrote the folder's .hydra/ (tests/test_collect_bad_folders.py
has the same for hand-made folders)."""

from __future__ import annotations

import json

import yaml

from tests.conftest import run_cli

FAST = ["epochs=1", "tensorboard=false", "progress=false", "dataset.image_size=16"]


def last_line(proc) -> str:
    return [line for line in proc.stderr.splitlines() if line.strip()][-1]


def test_a_changed_grid_into_a_finished_sweep_dir_is_refused_counted_and_fails(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "lr=0.01,1e12", *FAST, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]  # a diverged run is a result, not a failure
    assert "2 jobs: 1 completed, 1 diverged" in proc.stdout
    first = json.loads((sweep / "best.json").read_text())
    assert first["command"] == "python -m runner lr=0.01 epochs=1 tensorboard=False progress=False dataset.image_size=16"
    summary = (sweep / "0" / "summary.json").read_text()

    proc = run_cli("-m", "lr=0.02,1e12", *FAST, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "2 jobs: 0 completed, 1 diverged, 1 refused" in proc.stdout
    assert last_line(proc) == (f"error: 1 of 2 jobs failed or were refused (1 refused); the reasons are in "
                               f"{sweep}/.jobs/<job>.json")
    record = json.loads((sweep / ".jobs" / "0.json").read_text())
    assert record["status"] == "refused" and "holds a completed run of another config" in record["reason"]
    assert record["overrides"][0] == "lr=0.02" and record["run_dir"] == str((sweep / "0").resolve())
    assert (sweep / "0" / "summary.json").read_text() == summary  # the finished run is left as it was
    # Hydra rewrote the refused job's .hydra/overrides.yaml; best.json still repeats the run in the folder
    assert yaml.safe_load((sweep / "0" / ".hydra" / "overrides.yaml").read_text())[0] == "lr=0.02"
    best = json.loads((sweep / "best.json").read_text())
    assert best["command"] == first["command"] and best["best_value"] == first["best_value"]
    assert "lr=0.01" in (sweep / "report.html").read_text()

    # The original grid again: every job reused, the earlier refusals are not this sweep's
    proc = run_cli("-m", "lr=0.01,1e12", *FAST, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 jobs: 1 completed, 1 diverged" in proc.stdout and not list((sweep / ".jobs").glob("*.json"))
