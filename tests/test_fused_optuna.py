"""Optuna under the fused launcher: n_jobs suggestions trained as one group, pruning inside it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.conftest import run_sweep

FAST = ["tensorboard=false", "progress=false", "compute.threads=1"]
FUSED = ["hydra/launcher=fused", "hydra.launcher.fuse=true"]
# One epoch at lr <= 0.02 on digits: a fused trial and its single run agree to float rounding there.
# Later they can part: digits' max-pool windows hold exact ties (tests/test_fused.py), and a
# rounding-level difference flips one now and then: with this search over 2 epochs, trials parted by
# points in epoch 2 while epoch 1 agreed exactly (docs/benchmarks.md, Fused sweeps), so it trains one
# epoch. compute.channels_last=false as there.
SEARCH = ["hydra/sweeper=runner_optuna", "lr=interval(0.001,0.02)", "epochs=1", "compute.channels_last=false",
          "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=1"]


def load(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    root = tmp_path_factory.mktemp("fused_optuna")
    fused_out = run_sweep(root / "fused", *FAST, *SEARCH, *FUSED)
    run_sweep(root / "basic", *FAST, *SEARCH)
    return root, fused_out


def test_a_fused_search_records_the_trials_and_values_of_the_basic_one(searches):
    root, out = searches
    # two batches of n_jobs=2 suggestions, each trained as one fused group
    assert "Trials [0, 1] (jobs [0, 1]) launched as one batch" in out
    assert "Trials [2, 3] (jobs [2, 3]) launched as one batch" in out
    assert "Launching 2 jobs: 1 fused group(s) [[0, 1]], 0 single" in out
    assert "Launching 2 jobs: 1 fused group(s) [[2, 3]], 0 single" in out
    fused, basic = load(root / "fused").trials, load(root / "basic").trials
    assert [t.params for t in fused] == [t.params for t in basic] and len(fused) == 4
    assert len({t.params["lr"] for t in fused}) == 4
    for f, b in zip(fused, basic):
        assert f.state == b.state == TrialState.COMPLETE
        assert abs(f.value - b.value) <= 0.5, (f.params, f.value, b.value)
        assert f.user_attrs["job_num"] == b.user_attrs["job_num"] == f.number
        assert f.user_attrs["status"] == "completed"
        summary = json.loads((root / "fused" / str(f.number) / "summary.json").read_text())
        assert summary["best_val_acc"] == f.value and summary["epochs_done"] == 1
        fused_loss, basic_loss = (pd.read_csv(root / kind / str(f.number) / "metrics.csv")["train_loss"][0]
                                  for kind in ("fused", "basic"))
        assert fused_loss == pytest.approx(basic_loss, rel=1e-4)
    fused_table = pd.read_csv(root / "fused" / "results.csv").sort_values("job")
    basic_table = pd.read_csv(root / "basic" / "results.csv").sort_values("job")
    assert list(fused_table.columns) == list(basic_table.columns)
    assert json.loads((root / "fused" / "best.json").read_text())["best_value"] == max(t.value for t in fused)


def test_a_fused_study_resumes(searches):
    root, _ = searches
    before = load(root / "fused").trials
    out = run_sweep(root / "fused", *FAST, *SEARCH, *FUSED)  # the same command again: nothing runs
    assert "4 of n_trials=4 done" in out and "Launching" not in out
    assert len(load(root / "fused").trials) == len(before)

    out = run_sweep(root / "fused", *FAST, *SEARCH[:-3], "hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=2",
                    SEARCH[-1], *FUSED)  # a larger total: one more trial, in the next job folder
    assert "4 of n_trials=5 done" in out and "Launching 1 jobs: 0 fused group(s) [], 1 single" in out
    after = load(root / "fused").trials
    assert [t.params for t in after[:4]] == [t.params for t in before] and len(after) == 5
    assert after[4].state == TrialState.COMPLETE and after[4].user_attrs["job_num"] == 4
    assert after[4].params["lr"] not in {t.params["lr"] for t in before}
    assert json.loads((root / "fused" / "4" / "summary.json").read_text())["status"] == "completed"


def test_a_trial_pruned_inside_a_fused_group_leaves_it_and_the_other_trains_on(tmp_path):
    """lr 0.05 clears 40% val acc after one epoch on digits by a wide margin, 1e-6 stays near chance
    (tests/test_pruning.py): a threshold of 40% prunes exactly the second, whichever order the sampler
    suggests them in."""
    sweep_dir = tmp_path / "pruned"
    out = run_sweep(sweep_dir, *FAST, *FUSED, "hydra/sweeper=runner_optuna", "hydra/sweeper/pruner=threshold",
                    "hydra.sweeper.pruner.lower=40", "epochs=3", "lr=choice(0.05,1e-6)", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=6")
    assert "Launching 2 jobs: 1 fused group(s) [[0, 1]], 0 single" in out
    assert "pruned by ThresholdPruner after epoch 1" in out
    ran = [t for t in load(sweep_dir).trials if "duplicate_of" not in t.user_attrs]
    assert sorted(t.params["lr"] for t in ran) == [1e-6, 0.05]
    for t in ran:
        pruned = t.params["lr"] == 1e-6
        assert t.state == (TrialState.PRUNED if pruned else TrialState.COMPLETE), t
        assert t.user_attrs["status"] == ("pruned" if pruned else "completed")
        assert sorted(t.intermediate_values) == ([1] if pruned else [1, 2, 3])
        folder = sweep_dir / str(t.user_attrs["job_num"])
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == t.user_attrs["status"] and summary["epochs_done"] == (1 if pruned else 3)
        metrics = pd.read_csv(folder / "metrics.csv")
        assert list(metrics["epoch"]) == ([1] if pruned else [1, 2, 3])
        assert list(metrics["val_acc"]) == [t.intermediate_values[e] for e in metrics["epoch"]]
    lines = (sweep_dir / "results.txt").read_text().splitlines()
    assert sorted(line.endswith(" pruned") for line in lines) == [False, True]


def test_a_fused_batch_stopped_by_sigterm_runs_again_on_resume(tmp_path):
    """SIGTERM while a fused group trains: both trials are recorded interrupted and failed, and the
    re-run trains their parameters again, as one fused batch, in new job folders."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    sweep_dir = tmp_path / "cut"
    search = [*FAST, *SEARCH[:2], "epochs=3", "compute.channels_last=false", "hydra.sweeper.n_trials=2",
              "hydra.sweeper.n_jobs=2", *FUSED]
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-m", f"hydra.sweep.dir={sweep_dir}", *search],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("fused 2 trials"):  # the group has started its 3 epochs
            proc.send_signal(signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    cut, requeued = load(sweep_dir).trials[:2], load(sweep_dir).trials[2:]
    assert [(t.state, t.user_attrs["status"]) for t in cut] == [(TrialState.FAIL, "interrupted")] * 2
    assert [t.state for t in requeued] == [TrialState.WAITING] * 2
    assert all(json.loads((sweep_dir / str(t.number) / "summary.json").read_text())["status"] == "interrupted"
               for t in cut)

    out = run_sweep(sweep_dir, *search)
    assert "0 of n_trials=2 done" in out and "Launching 2 jobs: 1 fused group(s) [[2, 3]], 0 single" in out
    again = [t for t in load(sweep_dir).trials if t.number >= 2]
    assert [t.state for t in again] == [TrialState.COMPLETE] * 2
    assert [t.params for t in again] == [t.params for t in cut]
    assert [(t.user_attrs["retry_of"], t.user_attrs["job_num"]) for t in again] == [(0, 2), (1, 3)]


def test_max_failure_rate_is_checked_per_fused_batch(tmp_path):
    """Both trials of the first batch diverge (lr 1e6): 2 of 2 failed, more than 0.5, so the search stops
    there, with each recorded as a failed, diverged trial."""
    from tests.conftest import run_cli

    sweep_dir = tmp_path / "failing"
    proc = run_cli("-m", f"hydra.sweep.dir={sweep_dir}", *FAST, *FUSED, "hydra/sweeper=runner_optuna", "epochs=1",
                   "lr=choice(1e6,2e6,3e6,4e6)", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                   "hydra.sweeper.max_failure_rate=0.5")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Launching 2 jobs: 1 fused group(s) [[0, 1]], 0 single" in out
    assert "2 of the last 2 trials failed, more than hydra.sweeper.max_failure_rate=0.5" in out
    trials = [t for t in load(sweep_dir).trials if "duplicate_of" not in t.user_attrs]
    assert [(t.state, t.user_attrs["status"]) for t in trials] == [(TrialState.FAIL, "diverged")] * 2


def test_a_stopping_hook_drops_its_trial_from_the_stack_and_the_others_train_on(make_cfg, tmp_path):
    """train_fused with each trial's epoch-end hook (what the fused launcher builds for an Optuna trial):
    "stop" makes a trial `pruned` after that epoch; the others go on, equal to their single runs. The
    third trial differs from the second only in epochs: with hooks it gets no shared trajectory, so its
    own hook is asked after its epoch (a follower would never be)."""
    from runner.fused.loop import train_fused
    from runner.run.train import train

    calls: list[tuple[str, int]] = []

    def hook(name: str, answer: str | None):
        def epoch_end(epoch: int, row: dict[str, float]) -> str | None:
            assert 0 <= row["val_acc"] <= 100
            calls.append((name, epoch))
            return answer
        return epoch_end

    common = ("compute.channels_last=false", "progress=false")
    cfgs = [make_cfg("lr=0.02", "seed=2", "epochs=2", *common), make_cfg("lr=0.01", "epochs=2", *common),
            make_cfg("lr=0.01", "epochs=1", *common)]
    dirs = [tmp_path / name for name in "abc"]
    summaries = train_fused(cfgs, dirs, [hook("a", "stop"), hook("b", None), hook("c", None)])
    assert [(s["status"], s["epochs_done"]) for s in summaries] == [("pruned", 1), ("completed", 2), ("completed", 1)]
    assert calls == [("a", 1), ("b", 1), ("c", 1), ("b", 2)]
    assert list(pd.read_csv(dirs[0] / "metrics.csv")["epoch"]) == [1]

    single = train(make_cfg("lr=0.01", "epochs=2", *common), tmp_path / "single")
    went_on, alone = pd.read_csv(dirs[1] / "metrics.csv"), pd.read_csv(tmp_path / "single" / "metrics.csv")
    assert list(went_on["train_loss"]) == pytest.approx(list(alone["train_loss"]), rel=1e-4)
    assert abs(summaries[1]["best_val_acc"] - single["best_val_acc"]) <= 0.5


def test_a_failing_pruner_hook_fails_its_own_trial_only(make_cfg, tmp_path):
    """A trial whose pruner hook raises (its study's storage gone, say) is recorded failed, with the
    error, and gets no value, as its single run would; the other trials of the group train on."""
    from runner.fused.train_group import train_group

    def broken(epoch: int, row: dict[str, float]) -> str | None:
        raise ConnectionError("the study's storage is unreachable")

    common = ("compute.channels_last=false", "progress=false", "epochs=2")
    jobs = {0: (make_cfg("lr=0.02", "seed=2", *common), tmp_path / "a"),
            1: (make_cfg("lr=0.01", *common), tmp_path / "b")}
    values = train_group(jobs, {0: broken, 1: lambda epoch, row: None})
    failed, went_on = (json.loads((tmp_path / name / "summary.json").read_text()) for name in "ab")
    assert failed["status"] == "failed" and "storage is unreachable" in failed["error"]
    assert failed["epochs_done"] == 1 and values[0] is None
    assert went_on["status"] == "completed" and went_on["epochs_done"] == 2
    assert values[1] == went_on["best_val_acc"] > 0


def test_trials_with_a_pruner_are_no_epoch_prefix_family():
    """fuse=auto groups trials differing only in epochs at any batch size, to share one trajectory;
    trials with a pruner share none, so at batch 32 on a CPU they run one after another instead."""
    from hydra import compose, initialize_config_dir

    from runner.fused.groups import prefix_families
    from tests.conftest import CONF_DIR

    def job(epochs: int, trial: int, *pruner: str):
        with initialize_config_dir(config_dir=CONF_DIR):
            return compose(config_name="config", return_hydra_config=True,
                           overrides=["hydra/sweeper=runner_optuna", *pruner, f"epochs={epochs}",
                                      f"++hydra.job.env_set.RUNNER_OPTUNA_TRIAL={trial}"])

    assert prefix_families([job(1, 0), job(2, 1)], [0, 1]) == [[0, 1]]
    pruned = ("hydra/sweeper/pruner=threshold",)
    assert prefix_families([job(1, 0, *pruned), job(2, 1, *pruned)], [0, 1]) == [[0], [1]]
