"""Adversarial training (conf/adversary/) in a single run, a grid and an Optuna search maximising robust accuracy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest

from common.errors import ConfigError
from runner.record.run_folder import METRIC_COLUMNS
from runner.run.attacks import Adversary
from tests.conftest import run_cli

FAST = ["epochs=1", "tensorboard=false", "progress=false", "compute.threads=1"]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_a_grid_with_and_without_an_adversary(tmp_path):
    proc = run_cli("-m", f"hydra.sweep.dir={tmp_path}", *FAST, "epochs=2", "adversary=none,fgsm")
    assert proc.returncode == 0, proc.stderr
    plain, robust = tmp_path / "0", tmp_path / "1"
    assert list(pd.read_csv(plain / "metrics.csv").columns) == METRIC_COLUMNS  # nothing added without one
    assert "best_val_robust_acc" not in summary(plain)
    metrics = pd.read_csv(robust / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS + ["val_robust_acc"] and len(metrics) == 2
    assert metrics["val_robust_acc"].between(0, 100).all()
    assert summary(robust)["best_val_robust_acc"] == metrics["val_robust_acc"].max()
    table = pd.read_csv(tmp_path / "results.csv")  # the collector, run at the end of the sweep
    assert table["best_val_robust_acc"].isna().tolist() == [True, False]
    assert table["best_val_robust_acc"][1] == pytest.approx(summary(robust)["best_val_robust_acc"])


def test_an_optuna_search_can_maximise_robust_accuracy(tmp_path):
    proc = run_cli("-m", f"hydra.sweep.dir={tmp_path}", *FAST, "hydra/sweeper=runner_optuna", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.sampler.seed=0", "adversary=pgd", "adversary.steps=2", "adversary.epsilon=0.05",
                   "objective=val_robust_acc", "lr=interval(0.005,0.05)")
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{tmp_path}/optuna.db")
    values = [t.value for t in sorted(study.trials, key=lambda t: t.number)]
    runs = [summary(tmp_path / str(k)) for k in range(2)]
    assert values == [r["best_val_robust_acc"] for r in runs]
    assert values != [r["best_val_acc"] for r in runs]


def test_robust_objective_without_an_adversary_is_one_line(tmp_path):
    proc = run_cli("objective=val_robust_acc", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "objective=val_robust_acc is invalid: it is measured only with an adversary" in proc.stderr


@pytest.mark.parametrize("options, needle", [({"epsilon": 1.5}, "adversary.epsilon=1.5 is outside [0, 1]"),
                                             ({"epsilon": 0.1, "steps": 0}, "adversary.steps=0 is invalid")])
def test_bad_adversary_settings_are_refused(options, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        Adversary(**options)
