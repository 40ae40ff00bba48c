"""The captured step on a GPU: the graph replays exactly what the same static-buffer path computes without it.

Skipped without CUDA; run on a GPU machine with `python -m pytest -q -m cuda tests/` (bench/gpu_check.sh
step 1). A captured run (compute.cuda_graph=true: a failed capture or self-check fails it) is
compared with the same path without the graph (`plan_step(graph=False)`: the same static
buffers, tensor learning rates, optimizer flags and eager partial batch, the body run where the
graph would be replayed) for two epochs of digits at batch 50 (1,437 images: a partial batch of
37 each epoch): every state_dict entry (batch-norm running statistics and num_batches_tracked
included), the optimizer and scheduler state, the RNG and each epoch's metrics, exactly. Both
runs use deterministic kernels (cuDNN's and cuBLAS's), so any difference is the graph's.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read when CUDA starts

import runner.run.train as train_module  # noqa: E402
from runner.capture.cuda_graph import CaptureError, record  # noqa: E402
from runner.capture.graphed_step import GraphedStep  # noqa: E402
from runner.capture.plan import plan_step  # noqa: E402
from runner.run.train import train  # noqa: E402

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONF = Path(__file__).resolve().parents[1] / "conf"
EXACT = ["progress=false", "epochs=2", "batch_size=50", "compute.cudnn_benchmark=false"]


@pytest.fixture(autouse=True)
def deterministic():
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def run(make_cfg, run_dir: Path, *overrides: str) -> tuple[dict, pd.DataFrame]:
    train(make_cfg("device=cuda", *overrides), run_dir)
    return json.loads((run_dir / "summary.json").read_text()), pd.read_csv(run_dir / "metrics.csv")


def assert_identical(a, b, where: str = "") -> None:
    """Nested checkpoint contents equal exactly: tensors bitwise (dtype, shape, values), the rest by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.cpu(), b.cpu()), f"{where}: max difference {(a.float() - b.float()).abs().max()}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_runs_identical(graph_dir: Path, static_dir: Path) -> None:
    graph, static = (torch.load(d / "checkpoint.pth.tar", map_location="cpu", weights_only=False)
                     for d in (graph_dir, static_dir))
    for key in ("model", "optimizer", "scheduler", "rng", "epoch"):
        assert_identical(graph[key], static[key], key)
    timing = ["train_s", "val_s"]
    rows = [pd.read_csv(d / "metrics.csv").drop(columns=timing) for d in (graph_dir, static_dir)]
    assert len(rows[0]) == 2 and rows[0].equals(rows[1]), (rows[0], rows[1])  # each epoch's totals, exactly


def assert_captured(summary: dict, path: str = "captured") -> None:
    """The graph really ran: captured, checked, never fallen back."""
    assert summary["status"] == "completed", summary
    assert summary["step_path"] == path and summary["step_fallback"] is None, summary
    assert summary["capture_s"] > 0 and summary["step_check"] == "passed", summary


CASES = {
    # SGD momentum (fused kernel, tensor lr), a per-step schedule, clipping, smoothing, batch norm,
    # dropout and augmentation drawn from the CUDA generator inside the graph
    "sgd-onecycle-clip-smoothing-cnn5-bn-dropout": [
        "model=cnn5", "model.batch_norm=true", "model.dropout=0.3", "scheduler=onecycle",
        "+scheduler.cycle_momentum=false", "grad_clip=0.5", "label_smoothing=0.1", "augmentation=standard",
        "lr=0.01"],
    # Adam (capturable) with warm-up stepped per batch into a per-step cosine
    "adam-warmup-per-step": ["optimizer=adam", "lr=0.003", "scheduler=warmup", "scheduler.warmup=20",
                             "scheduler.after.interval=step", "scheduler.after.T_max=58"],
    "adamw-lenet-channels-last-fp32": ["optimizer=adamw", "lr=0.003", "compute.amp=false"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_graph_equals_the_static_path_without_it_exactly(make_cfg, tmp_path, monkeypatch, case):
    summary, _ = run(make_cfg, tmp_path / "graph", "compute.cuda_graph=true", *EXACT, *CASES[case])
    assert_captured(summary)
    monkeypatch.setattr(train_module, "plan_step", functools.partial(plan_step, graph=False))
    static, _ = run(make_cfg, tmp_path / "static", *EXACT, *CASES[case])
    assert static["step_path"] == "captured" and static["capture_s"] is not None  # the path, its body replayed
    assert_runs_identical(tmp_path / "graph", tmp_path / "static")


def test_fused_graph_equals_the_fused_static_path_exactly(make_cfg, tmp_path, monkeypatch):
    """A fused group of two trials with different optimizer options, channels-last input."""
    import runner.fused.loop as fused_loop
    from runner.fused.capture import plan_fused_step

    common = ["device=cuda", *EXACT, "compute.channels_last=true", "grad_clip=1.0"]
    group = [["lr=0.01", "seed=0"], ["lr=0.03", "seed=1", "label_smoothing=0.1", "optimizer.momentum=0.5"]]
    graph = fused_loop.train_fused([make_cfg(*common, "compute.cuda_graph=true", *o) for o in group],
                                   [tmp_path / f"g{k}" for k in range(2)])
    monkeypatch.setattr(fused_loop, "plan_fused_step", functools.partial(plan_fused_step, graph=False))
    fused_loop.train_fused([make_cfg(*common, *o) for o in group], [tmp_path / f"s{k}" for k in range(2)])
    for k in range(2):
        assert_captured(graph[k], "fused-captured")
        assert_runs_identical(tmp_path / f"g{k}", tmp_path / f"s{k}")


MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
MODEL_OPTIONS = {"resnet18_finetune": ["model.pretrained=false"]}  # no download on a test machine


@pytest.mark.parametrize("model", MODELS)
def test_every_model_captures_or_says_why_not(make_cfg, tmp_path, model):
    summary, rows = run(make_cfg, tmp_path, "progress=false", f"model={model}", *MODEL_OPTIONS.get(model, []),
                        "epochs=1")
    assert summary["status"] == "completed"
    if model in ("lenet", "cnn5", "resnet50"):
        assert_captured(summary)
    elif summary["step_path"] == "captured":
        assert summary["capture_s"] > 0 and summary["step_check"] == "passed"
    else:
        assert summary["step_path"] == "eager" and summary["step_fallback"], summary
    assert rows["train_loss"].notna().all()


def test_ineligible_run_falls_back_with_a_reason(make_cfg, tmp_path):
    summary, _ = run(make_cfg, tmp_path, "progress=false", "augmentation=strong", "epochs=1")
    assert summary["step_path"] == "eager" and "PerImage" in summary["step_fallback"]
    assert summary["step_check"] is None


class HostSync(GraphedStep):
    """A step with a host sync (`.item()`), which no graph can hold."""

    def __init__(self, device: torch.device, summary: dict) -> None:
        super().__init__(device, [[summary]], True, "captured")
        self.x = torch.zeros(256, device=device)

    def body(self, cache_casts: bool) -> None:
        self.x.add_(torch.rand(256, device=self.device))  # draws from the CUDA generator, as dropout does
        if self.x.sum().item() < 0:
            self.x.zero_()

    def live(self) -> list[torch.Tensor]:
        return [self.x]

    def checked(self) -> list[torch.Tensor]:
        return [self.x.sum(), self.x]


def test_a_failed_capture_leaves_a_clean_eager_run():
    """The cause is recorded (not "previous error during capture"), the thread is off the capture
    stream, the CUDA generator draws eagerly again, and repeated failures leak no memory pool."""
    device = torch.device("cuda")
    summary: dict = {}
    step = HostSync(device, summary)
    step.step()  # eager first step
    reserved = None
    for attempt in range(4):
        step.pending, step.failed, step.replay = True, False, None
        step.step()  # capture fails, the step runs eagerly
        assert summary["step_path"] == "eager" and summary["step_check"] is None
        assert summary["step_fallback"].startswith("capture failed: ")
        assert "previous error" not in summary["step_fallback"], summary["step_fallback"]
        assert not torch.cuda.is_current_stream_capturing()
        assert torch.cuda.current_stream() == torch.cuda.default_stream()
        torch.nn.functional.dropout(torch.ones(1000, device=device), 0.5)  # eager RNG works
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        if attempt == 1:
            reserved = torch.cuda.memory_reserved()
        elif attempt > 1:
            assert torch.cuda.memory_reserved() <= reserved  # each failure's pool was released
    before = step.x.clone()
    step.step()  # eager from now on
    assert not torch.equal(before, step.x)


def test_an_empty_graph_is_a_failed_capture():
    """Work that never reaches the capture stream (another device's, or the host's) gives an
    empty graph, whose replays would do nothing: a failed capture, not a captured step."""
    with pytest.raises(CaptureError, match="the graph is empty"):
        record(lambda: torch.ones(3).sum(), torch.device("cuda"))
    assert not torch.cuda.is_current_stream_capturing()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_a_run_on_the_second_gpu_captures_on_it(make_cfg, tmp_path):
    train(make_cfg("device=cuda:1", "progress=false", "epochs=1"), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert_captured(summary)
    assert torch.cuda.current_device() == 0  # the run's device was entered, not switched for good
