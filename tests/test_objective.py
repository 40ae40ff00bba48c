"""One rule for a run's value: the single run, a fused trial and a recovered Optuna trial all read it alike."""

from __future__ import annotations

import json

import optuna
import yaml
from omegaconf import OmegaConf

from runner.config.objective import objective_value, recorded_objective
from runner.fused.train_group import objective_value as fused_value
from runner.search.trials import recover_trial

SUMMARY = {"status": "completed", "best_val_acc": 50.0, "best_val_robust_acc": 30.0}


def test_the_value_is_the_named_objectives_best_and_none_for_failed_or_refused_runs():
    assert objective_value("val_acc", SUMMARY) == 50.0
    assert objective_value("val_robust_acc", SUMMARY) == 30.0
    assert objective_value("val_acc", {**SUMMARY, "status": "diverged"}) == 50.0
    for status in ("failed", "refused"):
        assert objective_value("val_acc", {**SUMMARY, "status": status}) is None
    assert objective_value("val_acc", {**SUMMARY, "best_val_acc": float("nan")}) is None
    assert objective_value("val_acc", {**SUMMARY, "best_val_acc": "abc"}) is None
    assert fused_value(OmegaConf.create({"objective": "val_robust_acc"}), SUMMARY) == 30.0


def test_a_recovered_trial_is_told_the_value_of_the_runs_own_objective(tmp_path):
    """A trial a stopped worker left RUNNING, in an objective=val_robust_acc search, whose job had ended."""
    run_dir = tmp_path / "0"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"objective": "val_robust_acc", "lr": 0.1}))
    (run_dir / "summary.json").write_text(json.dumps(SUMMARY))
    assert recorded_objective(run_dir) == "val_robust_acc"
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.set_user_attr("run_dir", str(run_dir))
    recover_trial(study, study.get_trials(deepcopy=False)[0])
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert study.trials[0].value == 30.0
