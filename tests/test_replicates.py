"""replicates=N: one job trains its run under seeds s, s+1, ... (fused where fuse=auto fuses) and reports the mean.

Digits with 80% of it held out for validation (360 training images) keeps each run short; batch 16
is where fuse=auto fuses on a CPU. The equivalence rule is the fused launcher's (tests/test_fused.py).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import CONF_DIR, run_cli, run_sweep

FAST = ["tensorboard=false", "progress=false", "compute.threads=1", "compute.channels_last=false", "batch_size=16",
        "dataset.val_fraction=0.8"]
SEED = 4
# A run folder as a single run leaves it (no replicate folders, no replicates block in its summary).
RUN_FILES = {".hydra", ".run.lock", "runner.log", "config.yaml", "metrics.csv", "summary.json", "curves.png",
             "checkpoint.pth.tar", "model_best.pth.tar"}


def compose(*overrides: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR):
        return hydra_compose(config_name="config", overrides=[*FAST, *overrides])


def read(path: Path):
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A replicates=3 job from the command line, and the three single runs of its seeds (the first
    from the command line with replicates left at its default, the others in this process)."""
    from runner.run.train import train

    root = tmp_path_factory.mktemp("replicates")
    command = [*FAST, "epochs=2", f"seed={SEED}", "replicates=3", f"hydra.run.dir={root / 'job'}"]
    proc = run_cli(*command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = run_cli(*FAST, "epochs=2", f"seed={SEED}", f"hydra.run.dir={root / 'single0'}")
    assert single.returncode == 0, single.stderr[-3000:]
    singles = [root / "single0"]
    for k in (1, 2):
        train(compose("epochs=2", f"seed={SEED + k}"), root / f"single{k}")
        singles.append(root / f"single{k}")
    return root / "job", singles, proc.stdout + proc.stderr, command


def test_fused_replicates_equal_single_runs_of_seeds_s_s1_s2(job):
    job_dir, singles, out, _ = job
    assert f"3 replicates, seeds [{SEED}, {SEED + 1}, {SEED + 2}], as one fused stack" in out
    for k, single in enumerate(singles):
        rep = job_dir / f"replicate_{k}"
        fm, sm = pd.read_csv(rep / "metrics.csv"), pd.read_csv(single / "metrics.csv")
        assert list(fm.columns) == list(sm.columns) and list(fm["epoch"]) == [1, 2]
        assert fm["train_loss"][0] == pytest.approx(sm["train_loss"][0], rel=1e-4)
        assert (abs(fm["val_acc"] - sm["val_acc"]) <= 0.5).all()
        assert list(fm["lr"]) == list(sm["lr"])
        assert read(rep / "config.yaml") == read(single / "config.yaml")  # seed s+k, replicates 1
        f = torch.load(rep / "checkpoint.pth.tar", weights_only=True)
        s = torch.load(single / "checkpoint.pth.tar", weights_only=True)
        for name in f["model"]:
            torch.testing.assert_close(f["model"][name], s["model"][name], rtol=1e-3, atol=1e-4)
        assert torch.equal(f["rng"]["torch"], s["rng"]["torch"])
        assert read(rep / "summary.json")["status"] == "completed"
        overrides = read(rep / ".hydra" / "overrides.yaml")  # the command that trains this replicate alone
        assert overrides[-2:] == [f"seed={SEED + k}", "replicates=1"]
        assert [o for o in overrides if o.startswith(("seed=", "replicates="))] == overrides[-2:]


def test_job_summary_and_curve_are_the_mean_of_its_replicate_folders(job):
    job_dir = job[0]
    summary = read(job_dir / "summary.json")
    reps = [read(job_dir / f"replicate_{k}" / "summary.json") for k in range(3)]
    values = [r["best_val_acc"] for r in reps]
    block = summary["replicates"]
    assert block["values"] == values and block["n"] == 3 and block["requested"] == 3
    assert block["seeds"] == [SEED, SEED + 1, SEED + 2] and block["statuses"] == ["completed"] * 3
    assert block["folders"] == ["replicate_0", "replicate_1", "replicate_2"]
    assert block["mean"] == pytest.approx(statistics.mean(values)) and summary["best_val_acc"] == block["mean"]
    assert block["std"] == pytest.approx(statistics.stdev(values))
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    assert read(job_dir / "config.yaml")["replicates"] == 3 and read(job_dir / "config.yaml")["seed"] == SEED

    curve = pd.read_csv(job_dir / "metrics.csv")
    rows = pd.concat([pd.read_csv(job_dir / f"replicate_{k}" / "metrics.csv") for k in range(3)])
    by_epoch = rows.groupby("epoch")
    assert list(curve["epoch"]) == [1, 2] and curve.columns[-1] == "val_acc_std"
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr"):
        assert list(curve[column]) == pytest.approx(list(by_epoch[column].mean()))
    assert list(curve["val_acc_std"]) == pytest.approx(list(by_epoch["val_acc"].std(ddof=1)))


def test_replicates_1_keeps_todays_layout(job):
    single = job[1][0]
    assert {p.name for p in single.iterdir()} == RUN_FILES
    assert "replicates" not in read(single / "summary.json") and read(single / "config.yaml")["replicates"] == 1


def test_a_replicate_folder_is_a_run_eval_and_resume_take(job, tmp_path):
    rep = job[0] / "replicate_1"
    proc = run_cli(f"checkpoint={rep / 'model_best.pth.tar'}", module="runner.eval")
    assert proc.returncode == 0, proc.stderr
    assert f"top-1 {read(rep / 'summary.json')['best_val_acc']:.2f}%" in proc.stdout
    # resume= takes its checkpoint, recipe (seed s+1) and history, and trains on
    proc = run_cli(f"resume={rep / 'checkpoint.pth.tar'}", "epochs=3", f"hydra.run.dir={tmp_path / 'more'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = pd.read_csv(tmp_path / "more" / "metrics.csv")
    assert list(resumed["epoch"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(resumed.iloc[:2], pd.read_csv(rep / "metrics.csv"))
    assert read(tmp_path / "more" / "config.yaml")["seed"] == SEED + 1


def test_the_same_command_again_reuses_the_finished_job(job):
    job_dir, _, _, command = job
    before = (job_dir / "summary.json").read_text()
    proc = run_cli(*command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already holds this run" in proc.stdout + proc.stderr and "epoch 1/2" not in proc.stdout + proc.stderr
    assert (job_dir / "summary.json").read_text() == before


def test_a_diverged_replicate_is_excluded_and_counted(tmp_path):
    """At lr 0.6 some seeds of this config diverge in their first epoch and others train on."""
    from runner.config.objective import objective_value
    from runner.sweep.replicates import train_replicates

    summary = train_replicates(compose("epochs=1", "lr=0.6", "seed=0", "replicates=3"), tmp_path / "job")
    block = summary["replicates"]
    reps = [read(tmp_path / "job" / f"replicate_{k}" / "summary.json") for k in range(3)]
    assert block["statuses"] == [r["status"] for r in reps]
    assert "diverged" in block["statuses"] and "completed" in block["statuses"], block
    kept = [r["best_val_acc"] for r in reps if r["status"] == "completed"]
    assert block["n"] == len(kept) and block["values"] == [r["best_val_acc"] if r["status"] == "completed" else None
                                                           for r in reps]
    assert block["mean"] == pytest.approx(statistics.fmean(kept)) == summary["best_val_acc"]
    assert summary["status"] == "completed" and objective_value("val_acc", summary) == block["mean"]
    curve = pd.read_csv(tmp_path / "job" / "metrics.csv")  # the mean over the replicates still training
    alive = [pd.read_csv(tmp_path / "job" / f"replicate_{k}" / "metrics.csv") for k in range(3)
             if reps[k]["status"] == "completed"]
    assert curve["val_acc"][0] == pytest.approx(statistics.fmean(f["val_acc"][0] for f in alive))

    # Every replicate diverged: the job did too, with no value for its sweeper.
    summary = train_replicates(compose("epochs=1", "lr=1e6", "replicates=2"), tmp_path / "all")
    assert summary["status"] == "diverged" and summary["replicates"]["n"] == 0
    assert summary["replicates"]["mean"] is None and objective_value("val_acc", summary) is None


def test_an_optuna_search_is_told_the_mean_and_its_pruner_the_mean_curve(tmp_path):
    """lr 0.05 trains; lr 1e-6 stays near chance, below the pruner's 40% after its first epoch."""
    sweep_dir = tmp_path / "study"
    run_sweep(sweep_dir, *FAST, "hydra/sweeper=runner_optuna", "hydra/sweeper/pruner=threshold",
              "hydra.sweeper.pruner.lower=40", "epochs=2", "lr=choice(0.05,1e-6)", "hydra.sweeper.n_trials=2",
              "hydra.sweeper.sampler.seed=6", "replicates=2")
    study = optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")
    trials = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "PRUNED"]
    lines = (sweep_dir / "results.txt").read_text().splitlines()
    for t in trials:
        job_dir = Path(t.user_attrs["run_dir"])
        summary = read(job_dir / "summary.json")
        reps = [read(job_dir / f"replicate_{k}" / "summary.json") for k in range(2)]
        curve = pd.read_csv(job_dir / "metrics.csv")
        assert t.intermediate_values == pytest.approx(dict(zip(curve["epoch"], curve["val_acc"])))
        if t.state.name == "COMPLETE":
            assert t.value == pytest.approx(statistics.fmean(r["best_val_acc"] for r in reps))
            assert t.value == summary["best_val_acc"] and lines[int(job_dir.name)] == f"{t.value:.2f}"
        else:  # both replicates stopped together, after the first epoch's mean
            assert summary["status"] == "pruned" and [r["status"] for r in reps] == ["pruned", "pruned"]
            assert list(curve["epoch"]) == [1] and curve["val_acc"][0] < 40


@pytest.mark.parametrize("overrides, message", [
    (["replicates=0"], "error: replicates=0 is invalid: use replicates=1 or more (copies of the run with seeds "
                       "seed, seed+1, ...)"),
    (["replicates=2", "seed=null"], "error: seed=null is invalid: replicates=2 trains seeds seed, seed+1, ...: "
                                    "give a seed, e.g. seed=0"),
])
def test_bad_replicates_is_one_line_and_leaves_nothing(tmp_path, overrides, message):
    proc = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_replicates_job_fuses_its_own_replicates_not_with_other_jobs():
    from runner.fused.groups import group_key
    from runner.sweep.replicates import fuses, replicate_config

    job = compose("replicates=3", "seed=7")
    assert group_key(job) is None and group_key(compose()) is not None  # the fused launcher runs it alone
    replicate = replicate_config(job, 2)
    assert replicate.seed == 9 and replicate.replicates == 1 and fuses(replicate)
    assert not fuses(replicate_config(compose("replicates=3", "batch_size=32", "device=cpu"), 0))  # fuse=auto's rule


def test_the_pruner_is_asked_once_an_epoch_with_the_replicates_mean():
    from runner.sweep.replicates import MeanCurve, ReplicateHook

    asked = []
    curve = MeanCurve(lambda epoch, row: asked.append((epoch, row)) or ("stop" if row["val_acc"] < 50 else None),
                      "val_acc")
    hooks = [ReplicateHook(curve, k, decides=True) for k in range(3)]
    for epoch, values in ((1, [40.0, 70.0, float("nan")]), (2, [30.0, 50.0, 40.0])):
        for hook, value in zip(hooks, values):  # the fused loop shows every row before any hook decides
            hook.observe(epoch, {"val_acc": value})
        decisions = [hook(epoch, {"val_acc": value}) for hook, value in zip(hooks, values)]
        assert decisions == ([None] * 3 if epoch == 1 else ["stop"] * 3)
    assert asked == [(1, {"val_acc": 55.0}), (2, {"val_acc": 40.0})]
