"""compute.compile=true: a compiled run trains the eager run's steps, and the later trials of one
sweep process reuse the first trial's compiled graphs (compile paid once per shape, not per trial)."""

from __future__ import annotations

import pandas as pd
import pytest
from torch._dynamo.utils import counters

from runner.run.train import train

COMMON = ("device=cpu", "epochs=1", "progress=false")


def rows(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=["train_s", "val_s"])


def test_compiled_trials_equal_eager_and_later_trials_compile_nothing(make_cfg, tmp_path):
    first = train(make_cfg(*COMMON, "compute.compile=true", "lr=0.01"), tmp_path / "compiled1")
    frames = counters["frames"]["total"]
    assert frames >= 1 and first["compile_s"] > 0
    # A new model instance of the same architecture: dynamo takes its parameters as graph inputs,
    # so the first trial's graphs serve it (no new frame) and must not carry the first model's weights.
    train(make_cfg(*COMMON, "compute.compile=true", "lr=0.02"), tmp_path / "compiled2")
    assert counters["frames"]["total"] == frames
    for k, lr in enumerate(["0.01", "0.02"], start=1):
        train(make_cfg(*COMMON, f"lr={lr}"), tmp_path / f"eager{k}")
        compiled, eager = rows(tmp_path / f"compiled{k}"), rows(tmp_path / f"eager{k}")
        for column in eager.columns:
            assert compiled[column].tolist() == pytest.approx(eager[column].tolist(), rel=1e-4), (lr, column)
