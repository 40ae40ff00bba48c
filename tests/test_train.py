"""One training run, in process, through the real composed config."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch

import runner.run.train as train_module
from runner.record.run_folder import METRIC_COLUMNS
from runner.run.train import train

TIMING = ["train_s", "val_s"]


def test_default_run_on_digits_passes_90_percent_and_fills_the_run_folder(make_cfg, tmp_path):
    cfg = make_cfg("tensorboard=true")
    summary = train(cfg, tmp_path)

    assert summary["status"] == "completed"
    assert summary["best_val_acc"] >= 90.0
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == METRIC_COLUMNS
    assert list(metrics["epoch"]) == list(range(1, 11))
    assert metrics["val_acc"].max() == pytest.approx(summary["best_val_acc"])
    assert int(metrics["val_acc"].idxmax()) + 1 == summary["best_epoch"]
    assert (metrics["val_top5"] >= metrics["val_acc"]).all()
    assert (metrics["lr"] == 0.01).all()  # digits carries its own lr
    assert summary["train_s"] == pytest.approx(metrics["train_s"].sum())

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["epochs_done"] == 10
    assert on_disk["params_m"] == pytest.approx(0.139414)
    assert {"best_val_acc", "best_epoch", "epochs_done", "status", "params_m", "wall_s"} <= on_disk.keys()
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "num_classes: 10" in (tmp_path / "config.yaml").read_text()

    best = torch.load(tmp_path / "model_best.pth.tar", weights_only=True)
    last = torch.load(tmp_path / "checkpoint.pth.tar", weights_only=True)
    assert best["epoch"] == summary["best_epoch"] and last["epoch"] == 10
    assert best["config"]["model"]["_target_"] == "models.lenet.LeNet"


def test_same_seed_repeats_exactly_and_seed_zero_is_a_seed(make_cfg, tmp_path):
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(make_cfg("epochs=2", f"seed={seed}"), tmp_path / name)
        runs.append(pd.read_csv(tmp_path / name / "metrics.csv").drop(columns=TIMING))
    pd.testing.assert_frame_equal(runs[0], runs[1])
    assert not runs[0].equals(runs[2])


def test_resume_continues_an_interrupted_run_and_matches_an_uninterrupted_one(make_cfg, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    train(make_cfg("epochs=3", "scheduler=cosine"), whole)

    real_epoch = train_module.train_epoch
    calls = {"n": 0}

    def interrupted_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", interrupted_in_epoch_two)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg("epochs=3", "scheduler=cosine"), cut)
    assert json.loads((cut / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)

    resumed = tmp_path / "resumed"
    summary = train(make_cfg("epochs=3", "scheduler=cosine", f"resume={cut / 'checkpoint.pth.tar'}"), resumed)
    assert summary["status"] == "completed" and summary["epochs_done"] == 3
    expected = pd.read_csv(whole / "metrics.csv").drop(columns=TIMING)
    got = pd.read_csv(resumed / "metrics.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(expected, got)
    a = torch.load(whole / "checkpoint.pth.tar", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint.pth.tar", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_loss_stops_the_run_as_diverged(make_cfg, tmp_path):
    summary = train(make_cfg("lr=1e12", "epochs=3"), tmp_path)
    assert summary["status"] == "diverged"
    assert summary["epochs_done"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_a_crash_is_recorded_as_failed_with_its_last_line(make_cfg, tmp_path):
    with pytest.raises(ValueError):
        train(make_cfg("model.image_size=8"), tmp_path)  # LeNet can't shrink 8x8 that far
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "at least 16x16" in summary["error"]


def test_step_scheduler_adam_and_contiguous_layout_train(make_cfg, tmp_path):
    summary = train(make_cfg("epochs=1", "scheduler=step", "optimizer=adam", "lr=0.001", "compute.channels_last=false"),
                    tmp_path)
    assert summary["status"] == "completed"


def test_auto_threads_share_the_cores_among_parallel_trials():
    import os

    from runner.run.compute import cpu_threads

    cores = len(os.sched_getaffinity(0))
    assert cpu_threads("auto", 1) == cores
    assert cpu_threads("auto", cores) == 1
    assert cpu_threads("auto", 10 * cores) == 1
    assert cpu_threads(3, 2) == 3


def test_joblib_launcher_counts_as_parallel_jobs():
    from omegaconf import OmegaConf

    from hydra.types import RunMode
    from runner.__main__ import parallel_jobs

    def hydra_cfg(target, n_jobs, mode=RunMode.MULTIRUN):
        return OmegaConf.create({"mode": mode, "launcher": {"_target_": target, "n_jobs": n_jobs}})

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert parallel_jobs(hydra_cfg(joblib, 2)) == 2
    assert parallel_jobs(hydra_cfg("hydra._internal.core_plugins.basic_launcher.BasicLauncher", None)) == 1
    assert parallel_jobs(hydra_cfg(joblib, -1)) == os.cpu_count()
    assert parallel_jobs(hydra_cfg(joblib, 4, RunMode.RUN)) == 1
