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
    assert last_line(proc) == (f"error: 1 of 2 jobs failed or were refused (1 refused); first, job 0: {sweep}/0 "
                               f"holds a completed run of another config (lr (0.01 -> 0.02), optimizer.lr (0.01 -> "
                               f"0.02)); use a new hydra.sweep.dir (or hydra.run.dir), or rerun=true to replace it; "
                               f"the reasons are in {sweep}/.jobs/<job>.json")
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


def test_a_job_refused_before_training_shows_refused_not_running(tmp_path):
    from omegaconf import OmegaConf

    from runner.collect import collect_and_report
    from runner.sweep.job_records import count_jobs, jobs_line, write_job_record
    from tests.fake_runs import write_fake_run

    write_fake_run(tmp_path / "0", {"lr": 0.01}, 50.0)
    (tmp_path / "1" / ".hydra").mkdir(parents=True)  # Hydra made the folder; the job was refused in it
    hydra = OmegaConf.create({"sweep": {"dir": str(tmp_path)}, "job": {"num": 1},
                              "runtime": {"output_dir": str(tmp_path / "1")},
                              "overrides": {"task": ["+model.x._target_=os.system"]}})
    write_job_record(hydra, "refused", "model.x._target_=os.system is not allowed")
    table = collect_and_report([tmp_path])
    assert list(table["status"]) == ["completed", "refused"]
    assert table["error"][1] == "model.x._target_=os.system is not allowed"
    assert (tmp_path / "results.txt").read_text().splitlines()[1] == "refused"
    assert jobs_line(count_jobs(tmp_path)) == "2 jobs: 1 completed, 1 refused"
    assert [p.name for p in (tmp_path / ".jobs").iterdir()] == ["1.json"]  # nothing half-written beside it
