"""Killed, repeated and concurrent runs and sweeps lose nothing.

Real processes throughout: runs started together, a sweep killed with SIGKILL and re-run,
a second process holding a sweep dir's lock, SIGTERM and SIGINT sent to a training run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from common.errors import ConfigError
from runner.record.run_folder import RunFolder
from runner.run.train import train
from tests.conftest import ROOT, run_cli

FAST = ["tensorboard=false", "progress=false"]


def start_cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """`python -m runner args...` started in the background, like run_cli but without waiting."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd or ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"process ended before {path} appeared: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ---------------------------------------------------------------- every run its own folder
def test_two_runs_started_together_get_two_complete_folders(tmp_path):
    procs = [start_cli("epochs=1", *FAST, cwd=tmp_path) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    folders = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert summary(folder)["status"] == "completed"
        assert len(pd.read_csv(folder / "metrics.csv")) == 1
        assert (folder / "checkpoint.pth.tar").is_file()
        log = (folder / "runner.log").read_text()
        assert log.count("epoch 1/1") == 1 and str(folder) in log  # one run's log, not two interleaved


# ---------------------------------------------------------------- re-running a killed grid
def test_rerun_of_a_killed_grid_reuses_finished_jobs_and_resumes_the_cut_off_one(tmp_path):
    sweep = tmp_path / "sweep"
    grid = ["-m", "epochs=1,4", *FAST, f"hydra.sweep.dir={sweep}"]
    proc = start_cli(*grid)
    wait_for(sweep / "1" / "checkpoint.pth.tar", proc)  # job 0 done, job 1 one epoch in
    proc.kill()
    proc.wait()
    assert summary(sweep / "0")["status"] == "completed"
    assert not (sweep / "1" / "summary.json").exists() or summary(sweep / "1")["status"] != "completed"
    finished = {p.name: p.stat().st_mtime_ns for p in (sweep / "0").iterdir() if p.is_file() and p.suffix not in (".log", ".lock")}
    first_best = summary(sweep / "0")["best_val_acc"]

    proc = run_cli(*grid)
    assert proc.returncode == 0, proc.stderr
    # Job 0 was not run again, and its files were left as they were.
    assert {p: (sweep / "0" / p).stat().st_mtime_ns for p in finished} == finished
    assert "already holds this run, completed: reusing it" in (sweep / "0" / "runner.log").read_text()
    # Job 1 carried on from its checkpoint to the end; each epoch appears once.
    assert "resuming from its checkpoint" in (sweep / "1" / "runner.log").read_text()
    assert summary(sweep / "1")["status"] == "completed" and summary(sweep / "1")["epochs_done"] == 4
    assert pd.read_csv(sweep / "1" / "metrics.csv")["epoch"].tolist() == [1, 2, 3, 4]
    # The table: each job once, with its final state; job 0's result is the one it had.
    table = pd.read_csv(sweep / "results.csv")
    assert table["job"].tolist() == [0, 1] and table["status"].tolist() == ["completed", "completed"]
    assert table["best_val_acc"][0] == pytest.approx(first_best)

    # A changed grid does not overwrite a finished job of another config: it is refused, in one line.
    proc = run_cli("-m", "epochs=2,4", *FAST, f"hydra.sweep.dir={sweep}")
    assert "holds a completed run of another config (epochs (1 -> 2))" in proc.stdout + proc.stderr
    assert summary(sweep / "0")["epochs_done"] == 1
    assert {p: (sweep / "0" / p).stat().st_mtime_ns for p in finished} == finished


def test_rerun_true_runs_a_finished_run_again_from_a_clean_folder(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("epochs=1", *FAST, f"hydra.run.dir={run_dir}").returncode == 0
    before = summary(run_dir)["started_at"]
    proc = run_cli("epochs=1", *FAST, f"hydra.run.dir={run_dir}")  # same command: reused, not run
    assert proc.returncode == 0 and summary(run_dir)["started_at"] == before
    assert "already holds this run" in proc.stdout
    (run_dir / "tensorboard").mkdir()
    (run_dir / "tensorboard" / "events.out.tfevents.old").write_text("from the earlier attempt")
    (run_dir / "notes.txt").write_text("the user's own file")
    proc = run_cli("epochs=1", "rerun=true", *FAST, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert summary(run_dir)["started_at"] > before and summary(run_dir)["status"] == "completed"
    assert not (run_dir / "tensorboard").exists()  # this attempt has tensorboard=false: nothing stale left
    assert (run_dir / "notes.txt").exists() and (run_dir / ".hydra" / "config.yaml").is_file()


# ---------------------------------------------------------------- one live sweep per sweep dir
HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from runner.sweep import locks
    locks.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(600)
""")


def test_a_second_sweep_into_a_live_sweep_dir_is_refused_until_its_holder_dies(tmp_path):
    sweep = tmp_path / "sweep"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(sweep)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run_cli("-m", "epochs=1", *FAST, f"hydra.sweep.dir={sweep}")
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "is in use by a running sweep" in lines[0] and f"pid {holder.pid}" in lines[0]
        assert not (sweep / "0").exists() and not (sweep / "results.csv").exists()  # nothing run, nothing collected
    finally:
        holder.kill()
        holder.wait()
    from runner.sweep import locks

    locks.acquire(sweep)  # the lock died with its holder (kill -9)
    locks.release(sweep)


def test_an_optuna_sweep_shares_its_sweep_dir(tmp_path):
    sweep = tmp_path / "study"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(sweep)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run_cli("-m", "hparams_search=lenet_optuna", "hydra.sweeper.n_trials=1", "epochs=1", *FAST,
                       f"hydra.sweep.dir={sweep}")
        assert proc.returncode == 0, proc.stderr
        assert summary(sweep / "0")["status"] == "completed"
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- SIGTERM and Ctrl-C
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_ends_interrupted_with_its_summary_and_one_line(tmp_path, sig, code):
    run_dir = tmp_path / "run"
    proc = start_cli("epochs=500", *FAST, f"hydra.run.dir={run_dir}")
    wait_for(run_dir / "metrics.csv", proc)
    if sig == signal.SIGTERM:  # meanwhile, a second run into the live run's folder is refused
        second = run_cli("epochs=1", *FAST, f"hydra.run.dir={run_dir}")
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"run folder {run_dir} is in use by a running run (pid {proc.pid}" in second.stderr
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (proc.returncode, err[-3000:])
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == [
        f"interrupted by {sig.name}; {run_dir} is recorded as interrupted"]
    assert summary(run_dir)["status"] == "interrupted" and summary(run_dir)["epochs_done"] >= 1


# ---------------------------------------------------------------- temporary files of a killed write
def test_a_run_folder_removes_temporary_files_a_killed_write_left(tmp_path):
    stale = [tmp_path / ".metrics.csv.k2j3h4.tmp", tmp_path / ".checkpoint.pth.tar.x9y8.tmp", tmp_path / ".curves.tmp.png"]
    kept = [tmp_path / "metrics.csv", tmp_path / "notes.tmp", tmp_path / ".hydra" / "config.yaml"]
    (tmp_path / ".hydra").mkdir()
    for path in stale + kept:
        path.write_text("x")
    RunFolder(tmp_path, tensorboard=False).close()
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


# ---------------------------------------------------------------- resume= checks the command line
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 2-epoch digits run's checkpoint (constant lr)."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    run_dir = tmp_path_factory.mktemp("two_epochs")
    with initialize_config_dir(config_dir=CONF_DIR):
        train(compose(config_name="config", overrides=["epochs=2", *FAST]), run_dir)
    return run_dir / "checkpoint.pth.tar"


@pytest.mark.parametrize("override, needle", [
    ("optimizer=adam", "optimizer._target_ (torch.optim.SGD -> torch.optim.Adam)"),
    ("batch_size=64", "batch_size (32 -> 64)"),
    ("augmentation=flip", "augmentation._target_"),  # digits trains with none
    ("scheduler=step", "scheduler._target_ (torch.optim.lr_scheduler.ConstantLR -> torch.optim.lr_scheduler.StepLR)"),
    ("dataset.val_fraction=0.3", "dataset.val_fraction (0.2 -> 0.3)"),
    ("seed=1", "seed (0 -> 1)"),
    ("epochs=1", "epochs=1 is fewer than the 2 epochs"),
])
def test_resume_refuses_another_recipe_or_fewer_epochs(make_cfg, checkpoint, tmp_path, override, needle):
    epochs = [] if override.startswith("epochs=") else ["epochs=3"]
    with pytest.raises(ConfigError) as refused:
        train(make_cfg(f"resume={checkpoint}", *epochs, override), tmp_path)
    assert needle in str(refused.value) and "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # refused before the run wrote anything


def test_resume_refusal_on_the_command_line_is_one_line(checkpoint, tmp_path):
    proc = run_cli(f"resume={checkpoint}", "optimizer=adam", *FAST, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        line for line in proc.stderr.splitlines() if line.startswith("error: resume=")]


def test_resume_applies_new_epochs_and_lr_and_records_them(make_cfg, checkpoint, tmp_path):
    result = train(make_cfg(f"resume={checkpoint}", "epochs=3", "lr=0.002"), tmp_path)
    assert result["status"] == "completed" and result["epochs_done"] == 3
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["lr"].tolist() == pytest.approx([0.01, 0.01, 0.002])  # digits' lr, then the new one
    import yaml

    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["epochs"] == 3 and config["lr"] == 0.002 and config["optimizer"]["lr"] == 0.002
    state = torch.load(tmp_path / "checkpoint.pth.tar", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.002)


def test_resume_refuses_a_new_lr_under_a_scheduler(make_cfg, tmp_path):
    first = tmp_path / "first"
    train(make_cfg("epochs=1", "scheduler=step"), first)
    with pytest.raises(ConfigError, match=r"lr=0.002 differs from the 0.01 .*StepLR.* resume with lr=0.01$"):
        train(make_cfg(f"resume={first / 'checkpoint.pth.tar'}", "epochs=2", "scheduler=step", "lr=0.002"),
              tmp_path / "second")


class InterruptsWhilePickled:
    """Sends this process SIGINT from inside torch.save, as a Ctrl-C mid-checkpoint does."""

    def __reduce__(self):
        signal.raise_signal(signal.SIGINT)
        return (int, (7,))


def test_an_interrupt_during_a_checkpoint_write_lands_after_the_file_is_in_place(tmp_path):
    from common.io import atomic_torch_save

    path = tmp_path / "checkpoint.pth.tar"
    with pytest.raises(KeyboardInterrupt):  # not torch's "unexpected pos" RuntimeError, which hid it
        atomic_torch_save({"epoch": 3, "x": InterruptsWhilePickled()}, path)
    assert torch.load(path, weights_only=False) == {"epoch": 3, "x": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth.tar"]
