"""Hydra's submitit launcher (hydra/launcher=submitit_local): the same results through another engine.

submitit_local runs each job in its own process, as submitit_slurm does on a cluster node, so
these check what a cluster run relies on: the job finds its trial and pruner from its own config
and environment, reports to the study and stops, and a failing job stays a row of the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.conftest import run_sweep

FAST = ["tensorboard=false", "progress=false", "compute.threads=1", "hydra/launcher=submitit_local"]


def sweep(sweep_dir: Path, *overrides: str) -> str:
    return run_sweep(sweep_dir, *FAST, *overrides)


def test_optuna_search_with_pruning_through_submitit_local(tmp_path):
    sweep_dir = tmp_path / "optuna"
    # lr=0.05 clears 40% after one epoch (digits, seed 0); lr=1e-6 stays near chance and is pruned
    search = ["hydra/sweeper=runner_optuna", "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=40",
              "lr=choice(0.05,1e-6)", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "epochs=2"]
    sweep(sweep_dir, *search)
    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")
    states = {t.params["lr"]: t.state for t in study.trials if "duplicate_of" not in t.user_attrs}
    assert states == {0.05: TrialState.COMPLETE, 1e-6: TrialState.PRUNED}
    lines = (sweep_dir / "results.txt").read_text().splitlines()
    for t in study.trials:
        if "job_num" in t.user_attrs:
            summary = json.loads((sweep_dir / str(t.user_attrs["job_num"]) / "summary.json").read_text())
            assert summary["status"] == t.user_attrs["status"]
            assert lines[t.user_attrs["job_num"]].endswith("pruned") == (summary["status"] == "pruned")
    # resume: both trials count, nothing is launched again
    out = sweep(sweep_dir, *search)
    assert "2 of n_trials=2 done" in out and "Launching" not in out and "Submitit" not in out


def test_grid_through_submitit_local_keeps_a_failed_job_in_the_table(tmp_path):
    sweep_dir = tmp_path / "grid"
    sweep(sweep_dir, "lr=0.05,1000.0", "epochs=1")
    assert (sweep_dir / "results.txt").read_text().splitlines() == [
        f"{json.loads((sweep_dir / '0' / 'summary.json').read_text())['best_val_acc']:.2f}", "diverged"]
