"""The captured step on a GPU: a captured run is the eager run's equivalent (issue 9's proof).

Skipped without CUDA; run on a GPU machine with `python -m pytest -q -m cuda tests/`.
Runs are compared with the same config and seed, compute.cuda_graph=true against false.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from runner.train import train
from tests.conftest import write_image_folder

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONF = Path(__file__).resolve().parents[1] / "conf"


def run(make_cfg, run_dir: Path, *overrides: str) -> tuple[dict, pd.DataFrame]:
    train(make_cfg("device=cuda", "progress=false", *overrides), run_dir)
    return json.loads((run_dir / "summary.json").read_text()), pd.read_csv(run_dir / "metrics.csv")


def captured_and_eager(make_cfg, tmp_path: Path, *overrides: str):
    captured, captured_rows = run(make_cfg, tmp_path / "captured", "compute.cuda_graph=true", *overrides)
    eager, eager_rows = run(make_cfg, tmp_path / "eager", "compute.cuda_graph=false", *overrides)
    assert captured["step_path"] == "captured", captured.get("step_fallback")
    assert captured["capture_s"] is not None and captured["capture_s"] > 0
    assert eager["step_path"] == "eager" and eager["capture_s"] is None
    assert captured["status"] == eager["status"] == "completed"
    return captured_rows, eager_rows


@pytest.mark.parametrize("augmentation", ["none", "flip"])
def test_first_replayed_step_equals_eager(make_cfg, tmp_path, augmentation):
    """64 training images at batch 32: step 1 runs eagerly (it creates the optimizer state), step 2
    is the first replay of the graph; the epoch's mean loss is theirs, so step 2 agrees within 1e-3.
    With flip: the replay draws the eager step's flips (graph-safe CUDA RNG offsets, README)."""
    root = write_image_folder(tmp_path / "data", classes=4, per_class=20, size=32)
    overrides = ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=32", "batch_size=32",
                 "epochs=1", f"augmentation={augmentation}"]
    captured, eager = captured_and_eager(make_cfg, tmp_path, *overrides)
    assert captured["train_loss"][0] == pytest.approx(eager["train_loss"][0], rel=1e-3)


CASES = {
    # SGD momentum (fused kernel with a tensor lr), a per-step schedule, clipping, smoothing,
    # batch norm and dropout, device-side augmentation randomness, a partial last batch (1,437 % 50)
    "sgd-onecycle-clip-smoothing-cnn5-bn-dropout": [
        "model=cnn5", "model.batch_norm=true", "model.dropout=0.3", "scheduler=onecycle",
        "+scheduler.cycle_momentum=false", "grad_clip=0.5", "label_smoothing=0.1", "augmentation=standard",
        "batch_size=50", "lr=0.01"],
    # Adam (capturable) with warm-up stepped per batch into a per-step cosine
    "adam-warmup-per-step": ["optimizer=adam", "lr=0.003", "scheduler=warmup", "scheduler.warmup=20",
                             "scheduler.after.interval=step", "scheduler.after.T_max=135"],
    "adamw-lenet-channels-last-fp32": ["optimizer=adamw", "lr=0.003", "compute.amp=false"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_captured_run_equals_eager_run(make_cfg, tmp_path, case):
    captured, eager = captured_and_eager(make_cfg, tmp_path, "epochs=3", *CASES[case])
    # an epoch of steps in bf16: rounding differences (fused vs foreach SGD, capturable Adam) compound
    assert captured["train_loss"][0] == pytest.approx(eager["train_loss"][0], rel=1e-2)
    assert captured["lr"].tolist() == pytest.approx(eager["lr"].tolist(), rel=1e-5)  # the schedule went on
    assert abs(captured["val_acc"].iloc[-1] - eager["val_acc"].iloc[-1]) <= 2.0  # 360 images: noise is ~1 point


MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
MODEL_OPTIONS = {"resnet18_finetune": ["model.pretrained=false"]}  # no download on a test machine


@pytest.mark.parametrize("model", MODELS)
def test_every_model_captures_or_says_why_not(make_cfg, tmp_path, model):
    summary, rows = run(make_cfg, tmp_path, f"model={model}", *MODEL_OPTIONS.get(model, []), "epochs=1")
    assert summary["status"] == "completed"
    if summary["step_path"] == "captured":
        assert summary["capture_s"] > 0 and summary["step_fallback"] is None
    else:
        assert summary["step_path"] == "eager" and summary["step_fallback"], summary
    assert rows["train_loss"].notna().all()


def test_ineligible_run_falls_back_with_a_reason(make_cfg, tmp_path):
    summary, _ = run(make_cfg, tmp_path, "augmentation=strong", "epochs=1")
    assert summary["step_path"] == "eager" and "PerImage" in summary["step_fallback"]


def test_fused_group_captured_equals_fused_eager(make_cfg, tmp_path):
    """A fused group of two trials, captured against eager (augmentation none, no dropout: inside
    the graph those would draw from the one CUDA stream, not each trial's)."""
    from runner.fused.loop import train_fused

    common = ["device=cuda", "progress=false", "epochs=2", "compute.channels_last=false", "grad_clip=1.0",
              "batch_size=50"]
    group = [["lr=0.01", "seed=0"], ["lr=0.03", "seed=1", "label_smoothing=0.1"]]
    captured = train_fused([make_cfg(*common, "compute.cuda_graph=true", *o) for o in group],
                           [tmp_path / f"c{k}" for k in range(2)])
    eager = train_fused([make_cfg(*common, "compute.cuda_graph=false", *o) for o in group],
                        [tmp_path / f"e{k}" for k in range(2)])
    for k in range(2):
        assert captured[k]["step_path"] == "fused-captured", captured[k].get("step_fallback")
        assert captured[k]["capture_s"] > 0 and eager[k]["step_path"] == "fused-eager"
        c, e = pd.read_csv(tmp_path / f"c{k}" / "metrics.csv"), pd.read_csv(tmp_path / f"e{k}" / "metrics.csv")
        assert c["train_loss"][0] == pytest.approx(e["train_loss"][0], rel=1e-2)  # an epoch of bf16 steps
        assert abs(c["val_acc"].iloc[-1] - e["val_acc"].iloc[-1]) <= 2.0
