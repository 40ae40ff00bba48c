"""The resumable Optuna sweeper (runner/search/sweeper.py), end to end through `python -m runner -m`.

Each search runs the real command on the digits data set with one epoch per trial and one CPU
thread (short trials: a command's time is mostly imports), with sqlite storage in a tmp sweep dir.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from runner.search.sweeper import record_result
from tests.conftest import run_cli, run_sweep

ROOT = Path(__file__).resolve().parents[1]
FAST = ["epochs=1", "tensorboard=false", "progress=false", "compute.threads=1"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sweep(sweep_dir: Path, *overrides: str) -> str:
    """Run one `python -m runner -m ...` search into `sweep_dir`; return its output."""
    return run_sweep(sweep_dir, *FAST, *overrides)


def load(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir}/optuna.db")


def job_folders(sweep_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())


def test_search_resumes_to_the_new_total_and_then_runs_nothing(tmp_path):
    sweep_dir = tmp_path / "study"
    search = ["hparams_search=lenet_optuna", "hydra.sweeper.sampler.seed=0"]

    sweep(sweep_dir, *search, "hydra.sweeper.n_trials=3")
    assert len(load(sweep_dir, "lenet_digits").trials) == 3
    assert job_folders(sweep_dir) == [0, 1, 2]
    first = {t.number: (t.params, t.value) for t in load(sweep_dir, "lenet_digits").trials}

    out = sweep(sweep_dir, *search, "hydra.sweeper.n_trials=6")
    assert "3 of n_trials=6 done" in out
    trials = load(sweep_dir, "lenet_digits").trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.number: (t.params, t.value) for t in trials[:3]} == first  # finished trials kept as they were
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # the re-seeded sampler repeats nothing
    assert job_folders(sweep_dir) == [0, 1, 2, 3, 4, 5]
    for t in trials:  # each trial points at its own folder, which ran its parameters
        assert t.user_attrs["job_num"] == t.number and t.user_attrs["status"] == "completed"
        assert json.loads((sweep_dir / str(t.number) / "summary.json").read_text())["best_val_acc"] == t.value

    best = json.loads((sweep_dir / "best.json").read_text())
    winner = max(trials, key=lambda t: t.value)
    assert (best["best_trial"], best["best_params"], best["best_value"]) == (winner.number, winner.params, winner.value)
    assert best["best_run_dir"] == str((sweep_dir / str(winner.number)).resolve())
    for plot in ("optuna_history.png", "optuna_parallel_coordinate.png", "optuna_param_importances.png"):
        assert (sweep_dir / plot).stat().st_size > 0, plot

    out = sweep(sweep_dir, *search, "hydra.sweeper.n_trials=6")
    assert "6 of n_trials=6 done" in out and "Launching" not in out
    assert len(load(sweep_dir, "lenet_digits").trials) == 6
    assert job_folders(sweep_dir) == [0, 1, 2, 3, 4, 5]


def test_failing_and_diverging_trials_do_not_end_the_search(tmp_path):
    # Four points, all of which must run (no parameter set runs twice): batch_size=0 fails the
    # config check, lr=1000 diverges to NaN in the first epoch, (16, 0.01) trains.
    sweep_dir = tmp_path / "study"
    proc = run_cli("-m", f"hydra.sweep.dir={sweep_dir}", *FAST, "hydra/sweeper=runner_optuna", "batch_size=choice(0,16)",
                   "lr=choice(0.01,1000.0)", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0")
    out = proc.stdout + proc.stderr
    # the search ran to its end; its two failed jobs make the command fail, in one line
    assert proc.returncode == 1 and "4 jobs: 1 completed, 1 diverged, 2 failed" in out, out[-3000:]
    # a suggestion repeating a point that ran is told FAIL with `duplicate_of` and not run
    trials = [t for t in load(sweep_dir, "optuna").trials if "duplicate_of" not in t.user_attrs]
    assert len(trials) == 4 and len({tuple(sorted(t.params.items())) for t in trials}) == 4
    status = {(t.params["batch_size"], t.params["lr"]): (t.state, t.user_attrs["status"]) for t in trials}
    assert status == {(0, 0.01): (TrialState.FAIL, "failed"), (0, 1000.0): (TrialState.FAIL, "failed"),
                      (16, 1000.0): (TrialState.FAIL, "diverged"), (16, 0.01): (TrialState.COMPLETE, "completed")}
    assert job_folders(sweep_dir) == [0, 1, 2, 3]
    best = json.loads((sweep_dir / "best.json").read_text())
    assert best["best_params"] == {"batch_size": 16, "lr": 0.01} and best["trials"]["COMPLETE"] == 1
    assert "Best parameters: batch_size=16 lr=0.01" in out
    # one completed trial: no importance plot, and that is not an error
    assert (sweep_dir / "optuna_history.png").exists() and not (sweep_dir / "optuna_param_importances.png").exists()


def test_trial_left_running_by_a_killed_sweep_runs_again_in_a_new_folder(tmp_path):
    # What `kill -9` during job 0 leaves behind: a RUNNING trial owned by a process that is gone,
    # and a job folder without summary.json.
    sweep_dir = tmp_path / "study"
    (sweep_dir / "0" / ".hydra").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.create_study(study_name="lenet_digits", storage=f"sqlite:///{sweep_dir}/optuna.db",
                                direction="maximize")
    stale = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                       "batch_size": optuna.distributions.CategoricalDistribution([8, 16, 32, 64])})
    for key, value in {"owner": f"{socket.gethostname()}:{dead.pid}", "job_num": 0,
                       "run_dir": str(sweep_dir / "0"), "sweep_dir": str(sweep_dir.resolve())}.items():
        stale.set_user_attr(key, value)

    out = sweep(sweep_dir, "hparams_search=lenet_optuna", "hydra.sweeper.n_trials=1")
    assert "was left RUNNING" in out and "0 of n_trials=1 done" in out
    trials = load(sweep_dir, "lenet_digits").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["status"] == "interrupted" and trials[0].user_attrs["retried"] is True
    assert trials[1].params == stale.params and trials[1].user_attrs["retry_of"] == 0
    assert trials[1].user_attrs["job_num"] == 1  # counting on: the killed job's folder is left as it was
    assert job_folders(sweep_dir) == [0, 1]
    # the killed job's folder says so, and the collector's table shows it once, with that state
    assert json.loads((sweep_dir / "0" / "summary.json").read_text())["status"] == "interrupted"
    assert (sweep_dir / "results.txt").read_text().splitlines()[0] == "interrupted"


@pytest.mark.parametrize("value", [float("nan"), math.inf, None])
def test_unusable_values_are_recorded_as_failed_trials(tmp_path, value):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=value)
    assert record_result(study, trial, ret) is False
    assert study.trials[0].state == TrialState.FAIL


def test_runner_optuna_is_our_sweeper_and_optuna_stays_the_plugins():
    out = subprocess.run([sys.executable, "-m", "runner", "hydra/sweeper=runner_optuna", "--cfg", "hydra", "-p", "hydra.sweeper"],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert "_target_: runner.search.sweeper.ResumableOptunaSweeper" in out.stdout, out.stdout + out.stderr
    assert "storage: sqlite:///${hydra.sweep.dir}/optuna.db" in out.stdout
    plugins = run_cli("-m", "hydra/sweeper=optuna", *FAST)  # the plugin's own sweeper: refused, ours named
    assert plugins.returncode == 2 and plugins.stderr.strip().endswith(
        "use hydra/sweeper=runner_optuna (the resumable sweeper with the same keys)"), plugins.stderr
