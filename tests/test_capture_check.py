"""The captured step's self-check and its fallback, on CPU: the static-buffer path without the graph,
with the replay swapped for one that is wrong the way a bad graph would be.

On a GPU the replay is the graph's (tests/test_capture_cuda.py); here it is the body itself, and
these broken replays stand in for a wrong graph: one that does nothing (a graph captured on
another device's stream is empty), one that steps with twice the learning rate (a graph holding
a stale learning rate), one that corrupts a single trial of a fused group.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch

import runner.run.setup as run_setup
import runner.run.train as train_module
from runner.capture.check import LOSS_RTOL, UPDATE_RTOL, compare_steps
from runner.capture.cuda_graph import CaptureError, first_cause, torch_too_old
from runner.capture.graphed_step import CaptureFailed
from runner.capture.plan import CapturedEpochs, plan_step
from runner.run.train import train
from tests.conftest import CONF_DIR
from tests.test_capture import summary_and_rows


def do_nothing(self):
    return lambda: None


def twice_the_lr(self):
    def replay():
        lrs = [group["lr"] for group in self.learner.optimizer.param_groups]  # tensors on this path
        for lr in lrs:
            lr.mul_(2)
        try:
            self.body(False)
        finally:
            for lr in lrs:
                lr.div_(2)
    return replay


def capture_raises(self):
    try:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
    except RuntimeError:
        raise CaptureError("CUDA error: operation failed due to a previous error during capture")


# LeNet on digits, one epoch at batch 50 (28 full batches, a partial one of 37): the check is the second step.
COMMON = ["device=cpu", "epochs=1", "batch_size=50", "progress=false", "optimizer=adamw", "lr=0.003"]


def compose(*overrides: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR):
        return hydra_compose(config_name="config", overrides=["tensorboard=false", *overrides])


@pytest.fixture(scope="module")
def eager_run(tmp_path_factory):
    """The eager run every fallback is compared with (trained once for the module)."""
    run_dir = tmp_path_factory.mktemp("eager")
    train(compose(*COMMON), run_dir)
    return summary_and_rows(run_dir)


@pytest.mark.parametrize("broken, said", [(do_nothing, "failed its check"), (twice_the_lr, "failed its check"),
                                          (capture_raises, "capture failed: CUDA error: operation not permitted")])
def test_a_wrong_replay_falls_back_to_the_eager_step(eager_run, tmp_path, monkeypatch, caplog, broken, said):
    monkeypatch.setattr(train_module, "plan_step", functools.partial(plan_step, graph=False))
    monkeypatch.setattr(CapturedEpochs, "record", broken)
    with caplog.at_level("INFO", logger="runner"):
        train(compose(*COMMON), tmp_path / "broken")
    summary, rows = summary_and_rows(tmp_path / "broken")
    _, eager_rows = eager_run
    assert summary["status"] == "completed" and summary["step_path"] == "eager", summary
    assert said in summary["step_fallback"] and summary["capture_s"] is None
    if broken is capture_raises:
        assert summary["step_check"] is None  # nothing was replayed, so nothing was compared
    else:
        assert summary["step_check"] == "failed" and summary["step_check_update"] > UPDATE_RTOL
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eager step:")]
    assert warned == [f"eager step: {summary['step_fallback']}"]  # one line, why
    for column in eager_rows.columns:  # the check's step was the eager one; then eager on: the eager run
        assert rows[column].tolist() == pytest.approx(eager_rows[column].tolist(), rel=1e-4), column


def test_a_good_replay_passes_and_keeps_the_captured_path(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "plan_step", functools.partial(plan_step, graph=False))
    train(compose(*COMMON), tmp_path)
    summary, _ = summary_and_rows(tmp_path)
    assert summary["step_path"] == "captured" and summary["step_fallback"] is None
    assert summary["step_check"] == "passed"
    assert summary["step_check_loss"] == 0.0 and summary["step_check_update"] == 0.0  # the same kernels on a CPU


def test_cuda_graph_true_fails_the_run_instead(tmp_path, monkeypatch):
    """compute.cuda_graph=true refuses a CPU run at start-up, so the captured path is driven here directly."""
    cfg = compose(*COMMON, "compute.cuda_graph=true")
    monkeypatch.setattr(run_setup, "configure_compute", lambda *a, **k: None)  # lets `true` start on a CPU
    monkeypatch.setattr(train_module, "plan_step", functools.partial(plan_step, graph=False))
    monkeypatch.setattr(CapturedEpochs, "record", do_nothing)
    with pytest.raises(CaptureFailed, match="compute.cuda_graph=true: the captured step failed its check"):
        train(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["step_check"] == "failed"
    assert "compute.cuda_graph=true" in summary["error"]


def test_fused_group_falls_back_when_one_trial_replays_wrong(make_cfg, tmp_path, monkeypatch):
    """One trial's slice corrupted by the replay: the group's check names that trial, and the whole
    group goes on with the eager fused step, equal to the eager fused run."""
    import runner.fused.loop as fused_loop
    from runner.fused.capture import FusedCapturedEpochs, plan_fused_step

    def second_trial_wrong(self):
        def replay():
            self.body(False)
            with torch.no_grad():
                for p in self.stack.params.values():
                    p[1].mul_(1.01)
        return replay

    common = ["device=cpu", "epochs=1", "batch_size=50", "compute.channels_last=false", "grad_clip=1.0"]
    group = [["lr=0.01", "seed=0"], ["lr=0.03", "seed=1"]]
    eager = fused_loop.train_fused([make_cfg(*common, *o) for o in group], [tmp_path / f"e{k}" for k in range(2)])
    monkeypatch.setattr(fused_loop, "plan_fused_step", functools.partial(plan_fused_step, graph=False))
    monkeypatch.setattr(FusedCapturedEpochs, "record", second_trial_wrong)
    broken = fused_loop.train_fused([make_cfg(*common, *o) for o in group], [tmp_path / f"b{k}" for k in range(2)])
    assert [s["step_path"] for s in eager] == ["fused-eager"] * 2
    for k in range(2):
        assert broken[k]["status"] == "completed" and broken[k]["step_path"] == "fused-eager"
        assert broken[k]["step_check"] == "failed" and f"run {tmp_path / 'b1'}:" in broken[k]["step_fallback"]
        _, eager_rows = summary_and_rows(tmp_path / f"e{k}")
        _, rows = summary_and_rows(tmp_path / f"b{k}")
        for column in eager_rows.columns:
            assert rows[column].tolist() == pytest.approx(eager_rows[column].tolist(), rel=1e-4), column
    assert broken[0]["step_check_update"] == 0.0 and broken[1]["step_check_update"] > UPDATE_RTOL


def states(before, update, gap, loss=2.0, loss_gap=0.0):
    """(before, replayed, eager) for one member: a loss sum and one parameter tensor."""
    torch.manual_seed(0)
    weight = torch.randn(100)
    direction = torch.randn(100)
    step = update * direction / direction.norm()
    eager = [torch.tensor(before + loss), weight + step]
    replayed = [torch.tensor(before + loss + loss_gap), weight + step + gap * step.norm() * torch.ones(100) / 10]
    return [torch.tensor(before), weight], replayed, eager


@pytest.mark.parametrize("gap, loss_gap, passes", [(0.0, 0.0, True), (0.5 * UPDATE_RTOL, 0.0, True),
                                                   (2 * UPDATE_RTOL, 0.0, False),
                                                   (0.0, 2 * LOSS_RTOL * 2.0, False), (math.nan, 0.0, False)])
def test_compare_steps_tolerances(gap, loss_gap, passes):
    before, replayed, eager = states(10.0, 0.1, gap, loss_gap=loss_gap)
    result = compare_steps(before, replayed, eager, None)
    assert result.passed is passes, result
    if passes:
        assert result.update_diff[0] == pytest.approx(gap, rel=1e-3, abs=1e-5)
    else:
        assert "the replayed step differs from the eager step" in result.reason


def test_compare_steps_with_no_update_needs_no_change():
    """lr 0 (a warm-up's first step): no update either way passes; a replay that moves the weights fails."""
    before, replayed, eager = states(0.0, 0.0, 0.0)
    assert compare_steps(before, replayed, eager, None).passed
    replayed[1] = replayed[1] + 1e-3
    assert not compare_steps(before, replayed, eager, None).passed


def test_the_failure_recorded_is_the_first_cause_and_old_torch_is_refused():
    try:
        capture_raises(None)
    except CaptureError as e:
        assert first_cause(e) == "CUDA error: operation not permitted when stream is capturing"
    assert first_cause(RuntimeError("")) == "RuntimeError"
    assert "2.5 or later" in torch_too_old("2.4.1+cu121") and torch_too_old("2.5.0") is None
    assert torch_too_old("2.14.1+cu130") is None
