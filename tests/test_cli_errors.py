"""Bad input: one clear line naming the key, the value and the fix; non-zero exit; no traceback."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert error_lines, proc.stdout
    text = proc.stderr
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("override, needles", [
    ("lr=0", ["lr=0", "positive learning rate"]),
    ("batch_size=0", ["batch_size=0", "batch_size=1 or more"]),
    ("epochs=0", ["epochs=0", "epochs=1 or more"]),
    ("device=tpu", ["device=tpu", "device=auto"]),
    ("dataset=miniplaces dataset.root=/nonexistent/miniplaces", ["dataset.root=/nonexistent/miniplaces", "does not exist"]),
])
def test_bad_values_are_refused_before_training(override, needles, tmp_path):
    proc = run_cli(*override.split(), f"hydra.run.dir={tmp_path}")
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "checkpoint.pth.tar").exists()


def test_unknown_group_option_lists_the_choices(tmp_path):
    proc = run_cli("model=resnet9000", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(proc, "model/resnet9000", "lenet")


def test_wrong_type_is_refused_by_the_schema(tmp_path):
    proc = run_cli("batch_size=big", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(proc, "batch_size", "big")


def test_resume_from_something_that_is_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    proc = run_cli(f"resume={junk}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(proc, f"resume={junk}", "not a readable checkpoint")


def test_resume_from_another_models_checkpoint(tmp_path):
    first = tmp_path / "first"
    assert run_cli("epochs=1", "tensorboard=false", f"hydra.run.dir={first}").returncode == 0
    proc = run_cli(f"resume={first / 'checkpoint.pth.tar'}", "dataset.num_classes=12", f"hydra.run.dir={tmp_path / 'b'}")
    assert_one_line_error(proc, "dataset.num_classes=12 changes it", "(10 -> 12)")  # the key, not the model

    # ...and the checkpoint itself is readable with torch's safe loader, and evaluates.
    assert torch.load(first / "checkpoint.pth.tar", weights_only=True)["epoch"] == 1
    proc = run_cli(f"checkpoint={first / 'model_best.pth.tar'}", module="runner.eval")
    assert proc.returncode == 0, proc.stderr
    assert "top-1" in proc.stdout and "top-5" in proc.stdout


def test_eval_refuses_a_missing_checkpoint_and_a_missing_split(tmp_path):
    proc = run_cli(f"checkpoint={tmp_path / 'nope.pth.tar'}", module="runner.eval")
    assert_one_line_error(proc, "does not exist")
    proc = run_cli("chekpoint=x", module="runner.eval")
    assert_one_line_error(proc, "unknown key 'chekpoint'")


def test_a_diverged_run_exits_zero(tmp_path):
    proc = run_cli("lr=1e12", "epochs=2", "tensorboard=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "status: diverged" in proc.stdout
