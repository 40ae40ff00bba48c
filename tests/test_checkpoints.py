"""Checkpoints as data: resume= takes the recipe from the checkpoint, and a damaged or crafted
checkpoint given to runner.eval, runner.analyze or resume= is one line, exit 2, nothing written."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from common.errors import ConfigError
from runner.run.resume import resume_from_checkpoint
from runner.run.train import train
from tests.conftest import run_cli

FAST = ["tensorboard=false", "progress=false"]
RECIPE = ["batch_size=64", "optimizer=adam", "lr=0.004", *FAST]  # a run with overrides
TIMING = ["train_s", "val_s"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One epoch of RECIPE (the checkpoint), and the same recipe run for two epochs without a break."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    root = tmp_path_factory.mktemp("runs")
    with initialize_config_dir(config_dir=CONF_DIR):
        train(compose(config_name="config", overrides=["epochs=1", *RECIPE]), root / "one")
        train(compose(config_name="config", overrides=["epochs=2", *RECIPE]), root / "two")
    return root


@pytest.fixture(scope="module")
def state(runs):
    return torch.load(runs / "one" / "checkpoint.pth.tar", weights_only=True)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the recipe comes from the checkpoint
def test_resume_alone_continues_a_run_with_overrides_and_equals_an_uninterrupted_one(make_cfg, runs, tmp_path):
    checkpoint = runs / "one" / "checkpoint.pth.tar"
    typed = [f"resume={checkpoint}", "epochs=2"]  # as typed: none of RECIPE's overrides
    summary = train(make_cfg(*typed), tmp_path, typed=typed)
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (config["batch_size"], config["optimizer"]["_target_"], config["lr"], config["epochs"]) == (
        64, "torch.optim.Adam", 0.004, 2)
    assert config["optimizer"]["lr"] == 0.004 and config["resume"] == str(checkpoint)
    expected = pd.read_csv(runs / "two" / "metrics.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(expected, pd.read_csv(tmp_path / "metrics.csv").drop(columns=TIMING))


@pytest.mark.parametrize("typed, needle", [
    ("batch_size=8", "batch_size=8 changes it: batch_size (64 -> 8)"),
    ("dataset=mnist", "dataset=mnist changes it: dataset._target_ (data.digits.Digits -> data.torchvision_sets.MNIST)"),
    ("dataset.num_classes=12", "dataset.num_classes=12 changes it: dataset.num_classes (10 -> 12)"),
    ("optimizer=sgd", "optimizer=sgd changes it: optimizer._target_"),
    ("scheduler=cosine", "scheduler=cosine changes it: scheduler._target_"),
    ("seed=3", "seed=3 changes it"),
    ("compute.amp=true", "compute.amp=true changes it"),
    ("experiment=vit", "experiment=vit changes keys through a config file"),
    ("epochs=0", "fewer than the 1 epochs"),
    ("compute.threads=abc", "compute.threads=abc is invalid"),
])
def test_resume_refuses_a_typed_key_that_changes_the_recipe_naming_it(make_cfg, runs, typed, needle):
    checkpoint = runs / "one" / "checkpoint.pth.tar"
    with pytest.raises(ConfigError) as refused:
        resume_from_checkpoint(make_cfg(f"resume={checkpoint}", typed), [f"resume={checkpoint}", typed])
    assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_resume_takes_allowed_keys_and_what_follows_them(make_cfg, runs, tmp_path):
    checkpoint = runs / "one" / "checkpoint.pth.tar"
    typed = ["epochs=5", "lr=0.001", "device=cpu", "compute.threads=1", "batch_size=64", "optimizer=adam"]
    cfg = make_cfg(f"resume={checkpoint}", *typed)
    resume_from_checkpoint(cfg, [f"resume={checkpoint}", *typed])  # retyping the recipe's own values is fine
    assert (cfg.epochs, cfg.lr, cfg.optimizer.lr, cfg.device, cfg.compute.threads) == (5, 0.001, 0.001, "cpu", 1)
    assert cfg.batch_size == 64 and cfg.optimizer._target_ == "torch.optim.Adam"


def test_resume_refuses_more_epochs_under_a_schedule_of_fixed_length(make_cfg, state, tmp_path):
    cosine = copy.deepcopy(state)
    cosine["config"]["scheduler"] = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True,
                                     "T_max": 1, "eta_min": 0.0, "interval": "epoch"}
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.004)
    cosine["scheduler"] = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=1).state_dict()
    path = tmp_path / "cosine.pth.tar"
    torch.save(cosine, path)
    with pytest.raises(ConfigError, match=r"epochs=3 differs from the 1 .*scheduler.T_max=1"):
        resume_from_checkpoint(make_cfg(f"resume={path}", "epochs=3"), [f"resume={path}", "epochs=3"])


def test_a_refused_resume_into_the_runs_own_folder_changes_nothing(runs, tmp_path):
    import shutil

    folder = tmp_path / "finished"
    shutil.copytree(runs / "one", folder)
    before = snapshot(folder)
    for bad in ("batch_size=16", "epochs=0"):
        proc = run_cli(f"resume={folder / 'checkpoint.pth.tar'}", bad, f"hydra.run.dir={folder}")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert snapshot(folder) == before


# ---------------------------------------------------------------- damaged and crafted checkpoints
def _set(path: str, value):
    def change(state):
        *parents, last = path.split(".")
        node = state
        for part in parents:
            node = node[part]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return change


BAD_FOR_EVERY_READER = {
    "huge class count": (lambda s: (_set("config.dataset.num_classes", 10 ** 12)(s),
                                    _set("config.model.num_classes", 10 ** 12)(s)), "belongs to another model"),
    "huge image size": (_set("config.dataset.image_size", 10 ** 7), "dataset.image_size=10000000"),
    "no compute": (_set("config.compute", KeyError), "compute is absent"),
    "compute key missing": (_set("config.compute.threads", KeyError), "compute.threads='<absent>'"),
    "compute key mistyped": (_set("config.compute.amp", 3), "compute.amp=3"),
    "threads not a number": (_set("config.compute.threads", "abc"), "compute.threads='abc'"),
    "model as a list": (_set("config.model", [1, 2]), "model is a list"),
    "model null": (_set("config.model", None), "model is absent"),
    "config not a mapping": (_set("config", "lenet"), "config is a str"),
    "interpolation": (_set("config.dataset.split_seed", "${oc.env:HOME}"), "interpolation"),
    "nan in config": (_set("config.label_smoothing", float("nan")), "label_smoothing is nan"),
    "epoch not a number": (_set("epoch", "one"), "epoch is 'one'"),
    "weights not tensors": (_set("model", {"conv1.weight": [1.0]}), "model weights"),
    "untrusted class": (_set("config.model._target_", "os.system"), "os.system is not allowed"),
}
BAD_FOR_RESUME = {
    "history broken": (_set("history", "abc"), "history"),
    "history row": (_set("history", [{"epoch": 1, "val_acc": "x"}]), "history row 1"),
    "rng broken": (_set("rng", {"torch": torch.zeros(3, dtype=torch.uint8)}), "RNG state"),
    "no best epoch": (_set("best_epoch", KeyError), "best_epoch"),
    "optimizer broken": (_set("optimizer", {"state": {}, "param_groups": []}), "optimizer settings don't match"),
    "optimizer slot shape": (lambda s: next(iter(s["optimizer"]["state"].values())).update(exp_avg=torch.zeros(3)),
                             "exp_avg doesn't fit"),
    "scheduler broken": (_set("scheduler", {"last_epoch": "x"}), "scheduler state"),
    "batch size mistyped": (_set("config.batch_size", "abc"), "batch_size=abc"),
    "unknown key": (_set("config.surprise", 1), "surprise=1"),
    "lr not positive": (_set("config.lr", -1.0), "lr=-1.0 is invalid"),
    "no batch size": (_set("config.batch_size", KeyError), "has no batch_size"),
    "optimizer settings mistyped": (lambda s: s["optimizer"]["param_groups"][0].update(lr="fast"),
                                    "optimizer settings don't match"),
    "data set option refused": (_set("config.dataset.val_fraction", "most"), "dataset.val_fraction"),
    "captured step on a CPU": (_set("config.compute.cuda_graph", "true"), "compute.cuda_graph=true needs a CUDA GPU"),
}


def crafted(state, tmp_path: Path, change) -> Path:
    bad = copy.deepcopy(state)
    change(bad)
    folder = tmp_path / "crafted"
    folder.mkdir()
    torch.save(bad, folder / "checkpoint.pth.tar")
    return folder / "checkpoint.pth.tar"


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", sorted(BAD_FOR_EVERY_READER))
def test_eval_and_analyze_refuse_a_crafted_checkpoint_in_one_line(state, tmp_path, capsys, case):
    from runner.analyze.__main__ import main as analyze_main
    from runner.eval import main as eval_main

    change, needle = BAD_FOR_EVERY_READER[case]
    path = crafted(state, tmp_path, change)
    assert eval_main([f"checkpoint={path}"]) == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert analyze_main([f"checkpoint={path}", "what=confusion"]) == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pth.tar"]  # no analysis/ folder


@pytest.mark.parametrize("case", sorted({**BAD_FOR_EVERY_READER, **BAD_FOR_RESUME}))
def test_resume_refuses_a_crafted_checkpoint_before_writing_anything(make_cfg, state, tmp_path, case):
    if case == "captured step on a CPU" and torch.cuda.is_available():
        pytest.skip("this machine has the GPU the setting asks for")
    change, needle = {**BAD_FOR_EVERY_READER, **BAD_FOR_RESUME}[case]
    path = crafted(state, tmp_path, change)
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as refused:
        train(make_cfg(f"resume={path}", "epochs=2"), run_dir, typed=[f"resume={path}", "epochs=2"])
    assert needle in str(refused.value) and "\n" not in str(refused.value)
    assert not run_dir.exists()


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys, content):
    from runner.eval import main as eval_main

    path = tmp_path / "file.pth.tar"
    if content is None:
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    assert eval_main([f"checkpoint={path}"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert ("holds a list" if content is None else "not a readable checkpoint") in line


def test_a_checkpoints_hydra_settings_and_download_are_ignored(make_cfg, state, tmp_path, capsys):
    from runner.eval import main as eval_main

    elsewhere = tmp_path / "elsewhere"
    path = crafted(state, tmp_path, _set("config.hydra", {"run": {"dir": str(elsewhere)},
                                                          "job": {"env_set": {"LD_PRELOAD": "/x.so"}}}))
    assert eval_main([f"checkpoint={path}"]) == 0, capsys.readouterr().err
    cfg = make_cfg(f"resume={path}", "epochs=2")
    resume_from_checkpoint(cfg, [f"resume={path}", "epochs=2"])
    assert "hydra" not in cfg and not elsewhere.exists()


def test_evals_last_resort_is_one_line_with_the_traceback_in_a_file(tmp_path):
    """Anything nothing checked for ends at the entry point's boundary (common/errors.py) as one line."""
    from common.errors import unexpected_error_line

    try:
        raise RuntimeError("something nobody checked\nsecond line")
    except RuntimeError as e:
        line = unexpected_error_line(e, tmp_path / "eval.log")
    assert "\n" not in line and line.startswith("RuntimeError: something nobody checked")
    written = Path(line.rsplit("full traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in written.read_text() and "second line" in written.read_text()
