"""Fused sweeps: K trials trained as one equal K single runs of the same configs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from runner.fused.loop import train_fused
from runner.fused.stack import StackedModels
from runner.run.train import train

# Float rounding differs between vmapped and plain convolutions (~1e-8). Digits are 8x8 images
# upscaled to 32x32, so max-pool windows hold exact ties; at lr 0.05 and above a rounding-level
# difference can flip a tie and the runs part by points of accuracy within an epoch or two
# (lr 0.05 seed 2: epoch-2 val acc 77.2 single vs 80.0 fused; lr 0.03 seed 1 parts in epoch 1).
# Below that, fused and single agree to ~1e-7 here. Both use compute.channels_last=false
# (result-neutral, docs/config.md); the fused step's channels-last layouts are checked step by step in
# tests/test_fused_update.py.
GROUP = [("lr=0.01", "seed=0"), ("lr=0.02", "seed=2"), ("lr=0.03", "seed=3")]


@pytest.fixture(scope="module")
def fused_and_single(tmp_path_factory):
    from tests.conftest import CONF_DIR
    from hydra import compose, initialize_config_dir

    def make(*overrides):
        with initialize_config_dir(config_dir=CONF_DIR):
            return compose(config_name="config", overrides=["tensorboard=false", "epochs=2", "compute.channels_last=false", *overrides])

    root = tmp_path_factory.mktemp("fused")
    fused_dirs = [root / f"fused{k}" for k in range(len(GROUP))]
    single_dirs = [root / f"single{k}" for k in range(len(GROUP))]
    fused = train_fused([make(*o) for o in GROUP], fused_dirs)
    single = [train(make(*o), d) for o, d in zip(GROUP, single_dirs)]
    return fused, single, fused_dirs, single_dirs


def test_fused_trials_equal_single_runs(fused_and_single):
    fused, single, fused_dirs, single_dirs = fused_and_single
    for f, s, fd, sd in zip(fused, single, fused_dirs, single_dirs):
        assert f["status"] == s["status"] == "completed"
        fm, sm = pd.read_csv(fd / "metrics.csv"), pd.read_csv(sd / "metrics.csv")
        assert list(fm.columns) == list(sm.columns) and list(fm["epoch"]) == [1, 2]
        assert fm["train_loss"][0] == pytest.approx(sm["train_loss"][0], rel=1e-4)
        assert abs(fm["val_acc"].iloc[-1] - sm["val_acc"].iloc[-1]) <= 0.5
        assert list(fm["lr"]) == list(sm["lr"])
        assert (fd / "curves.png").stat().st_size > 0
        assert json.loads((fd / "summary.json").read_text())["epochs_done"] == 2
        assert (fd / "config.yaml").read_text() == (sd / "config.yaml").read_text()
    # different lrs and seeds really are different runs
    assert len({round(f["best_val_acc"], 3) for f in fused} | {f["status"] for f in fused}) >= 2


def test_same_weights_and_random_draws_as_the_single_run(fused_and_single):
    """Final weights agree to float rounding and each trial's RNG ends where its single run's does:
    same initial weights (a different init would not converge to the same weights) and the same
    shuffles, drawn in the same order."""
    _, _, fused_dirs, single_dirs = fused_and_single
    for fd, sd in zip(fused_dirs, single_dirs):
        f = torch.load(fd / "checkpoint.pth.tar", weights_only=True)
        s = torch.load(sd / "checkpoint.pth.tar", weights_only=True)
        assert f.keys() == s.keys() and f["model"].keys() == s["model"].keys()
        for name in f["model"]:
            torch.testing.assert_close(f["model"][name], s["model"][name], rtol=1e-3, atol=1e-4)
        assert torch.equal(f["rng"]["torch"], s["rng"]["torch"])  # same draws in the same order


def test_optimizer_updates_land_in_the_stack():
    models = [torch.nn.Linear(3, 2) for _ in range(2)]
    stack = StackedModels(models)
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr) for m, lr in zip(models, (0.1, 0.5))]
    before = {n: p.detach().clone() for n, p in stack.params.items()}
    x = torch.randn(2, 4, 3)
    stack.forward(x).sum().backward()
    stack.hand_out_grads()
    for opt in optimizers:
        opt.step()
    for name, p in stack.params.items():
        for k, lr in enumerate((0.1, 0.5)):
            torch.testing.assert_close(p.detach()[k], before[name][k] - lr * p.grad[k])
    torch.testing.assert_close(models[1].weight.detach(), stack.params["weight"].detach()[1])
    stack.keep([1])  # drop trial 0: trial 1's weights and optimizer go on
    assert stack.params["weight"].shape[0] == 1
    torch.testing.assert_close(models[1].weight.detach(), stack.params["weight"].detach()[0])


def test_fused_launcher_sweep_matches_the_basic_launcher(tmp_path):
    from tests.conftest import run_cli, run_sweep

    grid = ("lr=0.01,0.02,0.03", "epochs=2", "compute.channels_last=false")
    out = run_sweep(tmp_path / "fused", *grid, "hydra/launcher=fused", "hydra.launcher.fuse=true")
    assert "1 fused group(s) [[0, 1, 2]]" in out
    assert all(f"run {job}: epoch 2/2  train loss" in out for job in range(3))  # whose line is whose
    run_sweep(tmp_path / "basic", *grid)
    fused = pd.read_csv(tmp_path / "fused" / "results.csv").sort_values("job").reset_index(drop=True)
    basic = pd.read_csv(tmp_path / "basic" / "results.csv").sort_values("job").reset_index(drop=True)
    assert list(fused.columns) == list(basic.columns)
    assert list(fused["lr"]) == list(basic["lr"]) == [0.01, 0.02, 0.03]
    assert (abs(fused["best_val_acc"] - basic["best_val_acc"]) <= 0.5).all()
    assert (fused["status"] == "completed").all()
    for job in range(3):
        folder = tmp_path / "fused" / str(job)
        assert {"config.yaml", "metrics.csv", "summary.json", "curves.png", "checkpoint.pth.tar",
                "model_best.pth.tar", ".hydra"} <= {p.name for p in folder.iterdir()}
    proc = run_cli(f"checkpoint={tmp_path / 'fused' / '1' / 'model_best.pth.tar'}", module="runner.eval")
    assert proc.returncode == 0, proc.stderr
    assert f"{fused['best_val_acc'][1]:.2f}" in proc.stdout + proc.stderr

    # The same command again: every fused trial's folder holds this run finished, so all are reused.
    again = run_sweep(tmp_path / "fused", *grid, "hydra/launcher=fused", "hydra.launcher.fuse=true")
    assert again.count("already holds this run") == 3


def test_fuse_auto_keeps_batch_64_on_cpu_unfused(tmp_path):
    from tests.conftest import run_sweep

    out = run_sweep(tmp_path / "batch64", "lr=0.01,0.02", "epochs=1", "batch_size=64", "hydra/launcher=fused",
                    "device=cpu")
    assert "0 fused group(s) [], 2 single" in out
    assert pd.read_csv(tmp_path / "batch64" / "results.csv")["status"].eq("completed").all()
    # ... but trials differing only in epochs still share one trajectory (a win at any batch size)
    out = run_sweep(tmp_path / "prefix", "lr=0.01", "epochs=1,2", "batch_size=64", "hydra/launcher=fused",
                    "device=cpu")
    assert "1 fused group(s) [[0, 1]]" in out
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "prefix" / "0" / "metrics.csv"),
                                  pd.read_csv(tmp_path / "prefix" / "1" / "metrics.csv").iloc[:1])


def test_bad_fuse_option_is_one_line(tmp_path):
    from tests.conftest import run_cli

    proc = run_cli("-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "lr=0.01,0.02", "hydra/launcher=fused",
                   "hydra.launcher.fuse=maybe")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: hydra.launcher.fuse=maybe is invalid: use auto, true or false"
    assert not (tmp_path / "sweep").exists()


def test_epoch_prefix_sharing_gives_the_shorter_trial_the_first_rows(fused_and_single, tmp_path):
    """lr 0.02 seed 2 for 2 epochs and for 1: one trajectory; the 1-epoch trial records its first epoch."""
    from tests.conftest import CONF_DIR
    from hydra import compose, initialize_config_dir

    def make(*overrides):
        with initialize_config_dir(config_dir=CONF_DIR):
            return compose(config_name="config", overrides=["tensorboard=false", *overrides])

    cfgs = [make("lr=0.02", "seed=2", "epochs=1"), make("lr=0.02", "seed=2", "epochs=2"), make("lr=0.01", "epochs=1")]
    dirs = [tmp_path / str(k) for k in range(3)]
    summaries = train_fused(cfgs, dirs)
    assert [s["status"] for s in summaries] == ["completed"] * 3
    short, long = pd.read_csv(dirs[0] / "metrics.csv"), pd.read_csv(dirs[1] / "metrics.csv")
    pd.testing.assert_frame_equal(short, long.iloc[:1])
    single = pd.read_csv(fused_and_single[3][1] / "metrics.csv")  # the single run of lr 0.02 seed 2, 2 epochs
    assert short["train_loss"][0] == pytest.approx(single["train_loss"][0], rel=1e-4)
    assert abs(long["val_acc"].iloc[-1] - single["val_acc"].iloc[-1]) <= 0.5
    checkpoint = torch.load(dirs[0] / "checkpoint.pth.tar", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["epochs"] == 1
    assert summaries[0]["best_epoch"] == 1 and summaries[0]["epochs_done"] == 1


def test_batch_norm_model_fuses_with_per_trial_running_statistics():
    """cnn5 with batch norm, 2 trials stacked vs 2 plain copies, 5 SGD steps on the same batches.

    (Over a whole digits epoch the two part by rounding growth, as plain runs with another
    kernel do, docs/fused.md; step by step they agree to float rounding.)
    """
    import copy

    from models.cnn5 import CNN5

    torch.manual_seed(0)
    models = [CNN5(in_channels=1, image_size=32, num_classes=10, batch_norm=True) for _ in range(2)]
    singles = [copy.deepcopy(m) for m in models]
    stack = StackedModels(models)
    fused_opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m, lr in zip(models, (0.01, 0.02))]
    single_opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m, lr in zip(singles, (0.01, 0.02))]
    stack.train()
    for _ in range(5):
        x, y = torch.randn(2, 32, 1, 32, 32), torch.randint(0, 10, (2, 32))
        logits = stack.forward(x)
        stack.zero_grad()
        sum(torch.nn.functional.cross_entropy(logits[k], y[k]) for k in range(2)).backward()
        stack.hand_out_grads()
        for k in range(2):
            fused_opts[k].step()
            single_opts[k].zero_grad()
            torch.nn.functional.cross_entropy(singles[k](x[k]), y[k]).backward()
            single_opts[k].step()
    for fused, single in zip(models, singles):
        stats = {n: b for n, b in single.named_buffers() if "running" in n}
        assert stats and all(b.abs().sum() > 0 for b in stats.values())
        for name, buffer in fused.named_buffers():  # each trial's own running statistics
            torch.testing.assert_close(buffer, dict(single.named_buffers())[name], rtol=1e-4, atol=1e-5)
        for a, b in zip(fused.parameters(), single.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_diverging_trial_is_dropped_and_the_others_go_on(fused_and_single, tmp_path):
    from tests.conftest import CONF_DIR
    from hydra import compose, initialize_config_dir

    def make(*overrides):
        with initialize_config_dir(config_dir=CONF_DIR):
            return compose(config_name="config", overrides=["tensorboard=false", "epochs=2", *overrides])

    dirs = [tmp_path / "ok", tmp_path / "nan"]
    summaries = train_fused([make("lr=0.01"), make("lr=1e6")], dirs)
    assert [s["status"] for s in summaries] == ["completed", "diverged"]
    assert summaries[1]["epochs_done"] == 1 and summaries[0]["epochs_done"] == 2
    # the trial that went on is the single run of lr 0.01, seed 0
    single = pd.read_csv(fused_and_single[3][0] / "metrics.csv")
    ok = pd.read_csv(dirs[0] / "metrics.csv")
    assert list(ok["train_loss"]) == pytest.approx(list(single["train_loss"]), rel=1e-4)
