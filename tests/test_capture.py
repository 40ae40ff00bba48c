"""compute.cuda_graph on CPU: bad values, the eager fallback, and the captured path's static-buffer
machinery (device-side gather, tensor lr, partial last batch) run without the graph.

The CUDA graph itself is checked in tests/test_capture_cuda.py (skipped without a GPU).
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from hydra.utils import execution_whitelist
from omegaconf import open_dict
from torch import nn

import runner.run.train as train_module
from data.augment import Normalize
from data.splits import ResidentSplit
from runner.capture.plan import plan_step, why_not_captured
from runner.run.build import build, build_scheduler
from runner.run.setup import Optimization, RunData
from runner.run.step import SingleLearner
from runner.run.train import train
from runner.trust.targets import run_whitelist
from tests.conftest import run_cli


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_bad_cuda_graph_value_is_one_line(tmp_path):
    line = one_error_line(run_cli("compute.cuda_graph=sometimes", f"hydra.run.dir={tmp_path}"))
    assert "compute.cuda_graph=sometimes" in line and "auto, true or false" in line


def test_cuda_graph_true_on_cpu_says_use_auto_or_false(tmp_path):
    line = one_error_line(run_cli("compute.cuda_graph=true", "device=cpu", f"hydra.run.dir={tmp_path}"))
    assert "compute.cuda_graph=true" in line and "auto or false" in line


def summary_and_rows(run_dir):
    import pandas as pd

    summary = json.loads((run_dir / "summary.json").read_text())
    rows = pd.read_csv(run_dir / "metrics.csv").drop(columns=["train_s", "val_s"])
    return summary, rows


def test_auto_on_cpu_trains_eagerly_and_equals_false(make_cfg, tmp_path, caplog):
    common = ["device=cpu", "epochs=1", "progress=false"]
    with caplog.at_level("INFO", logger="runner"):
        train(make_cfg(*common), tmp_path / "auto")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eager step")]
    assert said == ["eager step: the run trains on cpu; a CUDA graph needs a GPU"]  # one line, why
    train(make_cfg(*common, "compute.cuda_graph=false"), tmp_path / "false")
    auto, auto_rows = summary_and_rows(tmp_path / "auto")
    off, off_rows = summary_and_rows(tmp_path / "false")
    assert auto["step_path"] == off["step_path"] == "eager"
    assert auto["capture_s"] is None and "cpu" in auto["step_fallback"]
    assert off["step_fallback"] == "compute.cuda_graph=false"
    assert auto_rows.equals(off_rows)  # auto on a CPU changes nothing


# The captured path's machinery without the graph: static index buffer, gather on the device,
# tensor learning rate written by the scheduler, last partial batch eager. Digits has 1,437
# training images: batch 50 leaves a partial batch of 37 each epoch.
STATIC_CASES = {
    "sgd-onecycle-clip-smoothing-cnn5-bn-dropout": [
        "model=cnn5", "model.batch_norm=true", "model.dropout=0.3", "model.filters=8", "scheduler=onecycle",
        "+scheduler.cycle_momentum=false", "grad_clip=0.5", "label_smoothing=0.1", "augmentation=standard"],
    "adamw-warmup-per-epoch": ["optimizer=adamw", "lr=0.003", "scheduler=warmup", "scheduler.warmup=1"],
}


@pytest.mark.parametrize("case", list(STATIC_CASES))
def test_static_buffer_path_without_graph_equals_eager(make_cfg, tmp_path, monkeypatch, case):
    overrides = ["device=cpu", "epochs=2", "batch_size=50", "progress=false", *STATIC_CASES[case]]
    train(make_cfg(*overrides), tmp_path / "eager")
    monkeypatch.setattr(train_module, "plan_step", functools.partial(plan_step, graph=False))
    train(make_cfg(*overrides), tmp_path / "static")
    eager, eager_rows = summary_and_rows(tmp_path / "eager")
    static, static_rows = summary_and_rows(tmp_path / "static")
    assert eager["step_path"] == "eager" and static["step_path"] == "captured", static
    assert static["status"] == "completed" and static["step_check"] == "passed"
    # float32 tensor lr vs the float lr: equal up to rounding, epoch by epoch
    for column in eager_rows.columns:
        assert static_rows[column].tolist() == pytest.approx(eager_rows[column].tolist(), rel=1e-4), column
    saved = torch.load(tmp_path / "static" / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    assert all(isinstance(group["lr"], float) for group in saved["optimizer"]["param_groups"])  # eager form


@pytest.mark.parametrize("overrides, why", [
    (["compute.cuda_graph=false"], "compute.cuda_graph=false"),
    (["augmentation=strong"], "PerImage"),
    (["adversary=fgsm"], "adversarial"),
    (["scheduler=onecycle"], "cycles momentum"),
    (["batch_size=100"], "smaller than one batch"),
    ([], None),
])
def test_what_falls_back_and_why(make_cfg, overrides, why):
    cfg = make_cfg("device=cpu", *overrides)
    split = ResidentSplit(torch.zeros(64, 1, 32, 32, dtype=torch.uint8), torch.zeros(64, dtype=torch.long))
    model = nn.Linear(4, 2)
    with execution_whitelist(run_whitelist(cfg), reset=True):
        optimizer = build(cfg.optimizer, "optimizer", params=list(model.parameters()))
        scheduler, _ = build_scheduler(cfg.scheduler, optimizer, steps_per_epoch=2)
        augment = build(cfg.augmentation, "augmentation")
        adversary = train_module.build_adversary(cfg.get("adversary"))
    data = RunData(torch.device("cpu"), None, None, {"train": split}, augment, nn.Identity(), False)
    reason = why_not_captured(cfg, data, optimizer, scheduler, adversary, graph=False)
    assert reason == why if why is None else why in reason
    on_cpu = why_not_captured(cfg, data, optimizer, scheduler, adversary)
    assert on_cpu is not None  # with the graph, a CPU run is never captured


def test_fused_static_buffer_path_without_graph_equals_eager_fused(make_cfg, tmp_path, monkeypatch):
    """The fused group's captured path (per-trial shuffles from each trial's stream, K x B static
    index buffer, tensor lrs, partial last batch eager, the input in the stack's channels-last layout)
    without the graph equals the eager fused step.
    Augmentation none and no dropout: inside a graph those draw from the one CUDA stream instead."""
    import runner.fused.loop as fused_loop
    from runner.fused.capture import plan_fused_step

    common = ["device=cpu", "epochs=2", "batch_size=50", "compute.channels_last=true", "scheduler=onecycle",
              "+scheduler.cycle_momentum=false", "grad_clip=1.0"]
    group = [["lr=0.01", "seed=0", "label_smoothing=0.1"], ["lr=0.03", "seed=1"]]
    eager = fused_loop.train_fused([make_cfg(*common, *o) for o in group], [tmp_path / f"e{k}" for k in range(2)])
    monkeypatch.setattr(fused_loop, "plan_fused_step", functools.partial(plan_fused_step, graph=False))
    static = fused_loop.train_fused([make_cfg(*common, *o) for o in group], [tmp_path / f"s{k}" for k in range(2)])
    for k in range(2):
        assert eager[k]["step_path"] == "fused-eager" and static[k]["step_path"] == "fused-captured"
        assert static[k]["status"] == "completed" and static[k]["step_check"] == "passed"
        _, eager_rows = summary_and_rows(tmp_path / f"e{k}")
        _, static_rows = summary_and_rows(tmp_path / f"s{k}")
        for column in eager_rows.columns:
            assert static_rows[column].tolist() == pytest.approx(eager_rows[column].tolist(), rel=1e-4), column


def test_warm_up_before_capture_is_undone(make_cfg):
    """The warm-up steps before a capture change nothing: weights, batch-norm statistics, Adam's
    moments and step count, the epoch totals and the RNG are put back exactly (on CPU, without the graph)."""
    cfg = make_cfg("device=cpu", "model=cnn5", "model.batch_norm=true", "model.dropout=0.3", "model.filters=4",
                   "optimizer=adam", "augmentation=standard", "batch_size=16")
    torch.manual_seed(0)
    split = ResidentSplit(torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (40,)))
    with execution_whitelist(run_whitelist(cfg), reset=True):
        with open_dict(cfg):
            cfg.dataset.num_classes = 10
        model = build(cfg.model, "model")
        optimizer = build(cfg.optimizer, "optimizer", params=list(model.parameters()))
        scheduler, interval = build_scheduler(cfg.scheduler, optimizer, steps_per_epoch=3)
        augment = build(cfg.augmentation, "augmentation")
    normalize = Normalize([0.5], [0.25])
    summary: dict = {}
    data = RunData(torch.device("cpu"), None, None, {"train": split}, augment, normalize, False)
    learner = SingleLearner(model, nn.CrossEntropyLoss(), Optimization(optimizer, scheduler, interval), None, None)
    captured = plan_step(cfg, data, learner, None, summary, graph=False)
    assert summary["step_path"] == "captured"
    model.train()
    captured.static_idx.copy_(torch.arange(16))
    captured.step()  # the eager first step: the optimizer now has state
    before = state_of(model, optimizer, captured)
    captured.warm_up()
    after = state_of(model, optimizer, captured)
    assert before.keys() == after.keys() and len(before) > 20
    for key in before:
        assert torch.equal(before[key], after[key]), key


def state_of(model, optimizer, captured) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    for i, per_param in enumerate(optimizer.state.values()):
        state.update({f"optimizer.{i}.{k}": v.clone() for k, v in per_param.items()})
    state.update(loss_sum=captured.totals.loss_sum.clone(), correct=captured.totals.correct.clone(),
                 rng=torch.get_rng_state())
    return state


def test_fused_static_path_goes_on_after_a_trial_diverges(make_cfg, tmp_path, monkeypatch):
    """A diverged trial leaves the stack (restacked weights): the captured path rebuilds its
    buffers for the trials left, which train on exactly as in the eager fused loop."""
    import runner.fused.loop as fused_loop
    from runner.fused.capture import plan_fused_step

    common = ["device=cpu", "epochs=2", "compute.channels_last=false"]
    eager = fused_loop.train_fused([make_cfg(*common, "lr=0.01"), make_cfg(*common, "lr=1e6")],
                                   [tmp_path / "e_ok", tmp_path / "e_nan"])
    monkeypatch.setattr(fused_loop, "plan_fused_step", functools.partial(plan_fused_step, graph=False))
    static = fused_loop.train_fused([make_cfg(*common, "lr=0.01"), make_cfg(*common, "lr=1e6")],
                                    [tmp_path / "s_ok", tmp_path / "s_nan"])
    assert [s["status"] for s in static] == [s["status"] for s in eager] == ["completed", "diverged"]
    _, eager_rows = summary_and_rows(tmp_path / "e_ok")
    _, static_rows = summary_and_rows(tmp_path / "s_ok")
    assert static_rows["train_loss"].tolist() == pytest.approx(eager_rows["train_loss"].tolist(), rel=1e-4)
    assert static_rows["val_acc"].tolist() == pytest.approx(eager_rows["val_acc"].tolist(), rel=1e-4)


def test_fused_group_is_captured_only_if_every_trial_is_eligible(make_cfg, tmp_path, monkeypatch):
    """Trials may differ in scheduler options: the second trial's OneCycleLR cycles momentum (which
    a graph would freeze), so the group trains eagerly, and the reason names that trial's run."""
    import runner.fused.loop as fused_loop
    from runner.fused.capture import plan_fused_step

    monkeypatch.setattr(fused_loop, "plan_fused_step", functools.partial(plan_fused_step, graph=False))
    common = ["device=cpu", "epochs=1", "batch_size=50", "scheduler=onecycle"]
    summaries = fused_loop.train_fused([make_cfg(*common, "+scheduler.cycle_momentum=false"),
                                        make_cfg(*common, "lr=0.03")], [tmp_path / "a", tmp_path / "b"])
    for summary in summaries:
        assert summary["status"] == "completed" and summary["step_path"] == "fused-eager"
        assert summary["step_fallback"].startswith(f"run {tmp_path / 'b'}: scheduler OneCycleLR cycles momentum")
