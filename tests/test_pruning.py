"""Pruning (runner/search/pruning.py + the sweeper): jobs report to their trial each epoch and stop when told.

The search space has one learning rate that trains (lr=0.05: well above 40% val accuracy after
one epoch on digits, seed 0) and four that stay near chance (lr=1e-6..4e-6), and a ThresholdPruner
stops any trial below 40% after an epoch: which trials are pruned is certain, not a matter of
the order in which they ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from tests.conftest import run_sweep

FAST = ["tensorboard=false", "progress=false", "compute.threads=1"]
SEARCH = ["hydra/sweeper=runner_optuna", "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=40", "epochs=12",
          "lr=choice(0.05,1e-6,2e-6,3e-6,4e-6)", "hydra.sweeper.n_trials=5", "hydra.sweeper.sampler.seed=6",
          "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]


def sweep(sweep_dir: Path, *overrides: str) -> str:
    return run_sweep(sweep_dir, *FAST, *overrides)


def test_pruned_trials_are_recorded_free_their_slot_and_are_not_rerun(tmp_path):
    sweep_dir = tmp_path / "study"
    sweep(sweep_dir, *SEARCH)

    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")
    ran = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert sorted(t.params["lr"] for t in ran) == [1e-6, 2e-6, 3e-6, 4e-6, 0.05]
    for t in ran:
        assert t.state == (TrialState.COMPLETE if t.params["lr"] == 0.05 else TrialState.PRUNED), t
        assert t.user_attrs["status"] == ("completed" if t.params["lr"] == 0.05 else "pruned")
        assert t.intermediate_values and max(t.intermediate_values) == (12 if t.params["lr"] == 0.05 else 1)

    # each job folder: summary.json, and the collector's line k for job k
    summaries = {int(p.name): json.loads((p / "summary.json").read_text()) for p in sweep_dir.iterdir() if p.name.isdigit()}
    assert sorted(summaries) == [0, 1, 2, 3, 4]
    lines = (sweep_dir / "results.txt").read_text().splitlines()
    table = pd.read_csv(sweep_dir / "results.csv").set_index("job")
    for job, s in summaries.items():
        pruned = s["status"] == "pruned"
        assert s["epochs_done"] == (1 if pruned else 12)
        assert lines[job] == (f"{s['best_val_acc']:.2f} pruned" if pruned else f"{s['best_val_acc']:.2f}")
        assert table.loc[job, "epochs_done"] == s["epochs_done"] and table.loc[job, "status"] == s["status"]
    assert sorted(s["status"] for s in summaries.values()) == ["completed"] + ["pruned"] * 4

    # A pruned trial frees its slot at once: while the 12-epoch trial ran, the other slot started
    # more than one trial (launched in batches of two, it could start one at most).
    good = next(s for s in summaries.values() if s["status"] == "completed")
    good_end = good["started_at"] + good["wall_s"]
    during = [s for s in summaries.values() if s is not good and good["started_at"] < s["started_at"] < good_end]
    assert len(during) >= 2, summaries

    # A re-run counts the pruned trials towards n_trials: nothing runs again.
    out = sweep(sweep_dir, *SEARCH)
    assert "5 of n_trials=5 done" in out and "Launching" not in out
    assert len(optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep_dir}/optuna.db").trials) == len(study.trials)


def test_pruning_with_the_basic_launcher_in_the_sweepers_own_process(tmp_path):
    sweep_dir = tmp_path / "basic"
    sweep(sweep_dir, *SEARCH[:3], "epochs=2", "lr=choice(0.05,1e-6)", "hydra.sweeper.n_trials=2")
    lines = (sweep_dir / "results.txt").read_text().splitlines()
    assert sorted(line.endswith(" pruned") for line in lines) == [False, True]
    assert all(float(line.split()[0]) >= 0 for line in lines)
    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert sorted(t.state.name for t in study.trials if "duplicate_of" not in t.user_attrs) == ["COMPLETE", "PRUNED"]


def test_a_pruner_config_may_only_name_optunas_pruners():
    import pytest
    from omegaconf import OmegaConf

    from runner.search.pruning import build_pruner

    pruner = build_pruner(OmegaConf.create({"_target_": "optuna.pruners.HyperbandPruner", "max_resource": 10}))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    with pytest.raises(Exception, match="os.system"):
        build_pruner(OmegaConf.create({"_target_": "os.system", "command": "echo unsafe"}))
