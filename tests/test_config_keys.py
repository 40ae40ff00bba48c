"""Every config key has a kind (runner/config/keys.py), and every rule reads it: a key of one kind
behaves alike in rerun, resume, the study rules, fusing, the collector and TensorBoard's HParams."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common.errors import ConfigError
from runner.collect import collect
from runner.config.keys import DISPLAY, PER_TRIAL, RESULT, SPEED, declared_kind, flatten, kind_of
from runner.fused.groups import fusible_groups
from runner.fused.prefix import prefix_leaders
from runner.record.tb_hparams import hparams_of
from runner.run.resume import resume_from_checkpoint
from runner.search.study_rules import differing_overrides
from runner.sweep.rerun import prepare_run_folder
from tests.conftest import CONF_DIR
from tests.fake_runs import write_fake_run

BASE = ["tensorboard=false", "progress=false", "epochs=1"]
# (an override away from BASE, its kind, whether resume takes it from the command line)
CASES = [
    ("batch_size=16", RESULT, False),
    ("model.return_shapes=true", RESULT, False),
    ("dataset.val_fraction=0.3", RESULT, False),
    ("device=cpu", RESULT, True),  # resume may continue a run on another device: one of its own keys
    ("compute.amp=false", RESULT, False),
    ("lr=0.05", PER_TRIAL, True),  # resume sets a new constant lr itself
    ("seed=1", PER_TRIAL, False),
    ("optimizer.momentum=0.5", PER_TRIAL, False),
    ("num_workers=1", SPEED, True),
    ("compute.threads=2", SPEED, True),
    ("compute.channels_last=false", SPEED, True),
    ("progress=true", DISPLAY, True),
    ("tensorboard=true", DISPLAY, True),
    ("logger=mlflow", DISPLAY, True),
]
IDS = [override for override, _, _ in CASES]


def compose_run(*overrides: str):
    """The composed run config, a copy of its own (resume and rerun write into theirs)."""
    return copy.deepcopy(_composed(overrides))


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]):
    with initialize_config_dir(config_dir=CONF_DIR):
        return compose(config_name="config", overrides=[*BASE, *overrides])


def plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def group_options() -> list[str]:
    """`group=option` for every file of every config group in conf/ (Hydra's own settings aside)."""
    conf = Path(CONF_DIR)
    return sorted(f"{d.name}={f.stem}" for d in conf.iterdir() if d.is_dir() and d.name != "hydra"
                  for f in d.glob("*.yaml"))


def _key(override: str) -> str:
    return override.split("=", 1)[0]


# ---------------------------------------------------------------- every key has a kind
@pytest.mark.parametrize("option", [None, *group_options()])
def test_every_key_of_every_config_has_a_declared_kind(option):
    cfg = compose_run(*([option] if option else []))
    keys = flatten(OmegaConf.to_container(cfg, resolve=False))
    undeclared = sorted(k for k in keys if declared_kind(k) is None)
    assert not undeclared, f"declare a kind in runner/config/keys.py KINDS for {undeclared}"


def test_the_kinds_decided_where_the_rules_disagreed():
    assert kind_of("device") == RESULT and kind_of("compute.amp") == RESULT
    assert kind_of("compute.threads") == SPEED and kind_of("compute.trials_per_gpu") == SPEED
    assert kind_of("replicates") == RESULT and kind_of("dataset.root") == RESULT
    assert kind_of("optimizer._target_") == RESULT and kind_of("optimizer.weight_decay") == PER_TRIAL
    assert kind_of("scheduler.after.T_max") == PER_TRIAL and kind_of("logger.mlflow.experiment") == DISPLAY
    assert kind_of("+compute.new_switch") == RESULT  # undeclared: the safe side
    assert declared_kind("compute.new_switch") is None and declared_kind("batch_size.x") is None


# ---------------------------------------------------------------- one kind, one behaviour everywhere
@pytest.mark.parametrize("override, kind, _", CASES, ids=IDS)
def test_rerun_reuses_a_finished_run_unless_a_result_key_changed(override, kind, _, tmp_path):
    (tmp_path / "config.yaml").write_text(json.dumps(plain(compose_run())))
    summary = {"status": "completed", "best_val_acc": 50.0}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    changed = compose_run(override)
    if kind in (RESULT, PER_TRIAL):
        with pytest.raises(ConfigError, match="holds a completed run of another config"):
            prepare_run_folder(changed, tmp_path)
    else:
        assert prepare_run_folder(changed, tmp_path) == summary


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from runner.run.train import train

    run_dir = tmp_path_factory.mktemp("one_epoch")
    train(compose_run("batch_size=256", "dataset.val_fraction=0.9"), run_dir)  # few steps: a quick epoch
    return run_dir / "checkpoint.pth.tar"


@pytest.mark.parametrize("override, kind, resume_takes", CASES, ids=IDS)
def test_resume_takes_speed_and_display_keys_and_its_own_few(override, kind, resume_takes, checkpoint):
    typed = [f"resume={checkpoint}", override]
    cfg = compose_run(*typed)
    if not resume_takes:
        with pytest.raises(ConfigError, match=f"{override} changes it"):
            resume_from_checkpoint(cfg, typed)
        return
    resume_from_checkpoint(cfg, typed)
    key = _key(override)
    assert OmegaConf.select(cfg, key) == OmegaConf.select(compose_run(override), key)
    assert (kind in (SPEED, DISPLAY)) or key in ("device", "lr")


@pytest.mark.parametrize("override, kind, _", CASES, ids=IDS)
def test_a_study_repeats_result_overrides_only(override, kind, _):
    differs = differing_overrides(["epochs=1"], ["epochs=1", override])
    assert bool(differs) == (kind in (RESULT, PER_TRIAL)), differs


@pytest.mark.parametrize("override, kind, _", CASES, ids=IDS)
def test_jobs_fuse_when_they_differ_in_per_trial_and_display_keys_only(override, kind, _):
    groups, alone = fusible_groups([compose_run(), compose_run(override)])
    if kind in (PER_TRIAL, DISPLAY):
        assert (groups, alone) == ([[0, 1]], [])
    else:
        assert (groups, alone) == ([], [0, 1])


@pytest.mark.parametrize("override, kind, _", CASES, ids=IDS)
def test_a_shorter_trial_shares_a_longer_ones_epochs_unless_a_result_key_differs(override, kind, _):
    followers = prefix_leaders([compose_run(override), compose_run("epochs=2")])
    assert followers == ({} if kind in (RESULT, PER_TRIAL) else {0: 1})


@pytest.mark.parametrize("override, kind, _", CASES, ids=IDS)
def test_the_collector_and_hparams_show_every_key_but_display_keys(override, kind, _, tmp_path):
    key = _key(override)
    group = {key: override.split("=", 1)[1]} if key == "logger" else {}
    write_fake_run(tmp_path / "0", plain(compose_run()), 50.0)
    write_fake_run(tmp_path / "1", plain(compose_run(override)), 60.0, choices=group)
    columns = [c for c in collect([tmp_path]).columns if c == key or c.startswith(f"{key}.")]
    hparams = [k for k in hparams_of(plain(compose_run(override)), group) if k == key or k.startswith(f"{key}.")]
    if kind == DISPLAY:
        assert columns == [] and hparams == []
    else:
        assert columns == [key] and key in hparams
