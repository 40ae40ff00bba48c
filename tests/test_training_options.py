"""Training options: every optimizer, scheduler and augmentation config instantiates and behaves."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.utils import execution_whitelist, instantiate
from torch import nn

import runner.run.build as build_module  # train() builds every group through runner.run.build
from common.errors import ConfigError
from data.augment import Compose, RandomCrop
from runner.config.schema import TRUSTED_TARGETS
from runner.run.build import build_scheduler
from runner.run.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_TRAIN = 64  # of the 80 images write_image_folder makes; 16 go to validation


def group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml"))


def make(node):
    with execution_whitelist(TRUSTED_TARGETS):
        return instantiate(node)


# ---------------------------------------------------------------- optimizers
OPTIMIZERS = [(name, []) for name in group("optimizer")] + [("sgd", ["optimizer.nesterov=true"])]


@pytest.mark.parametrize("name, extra", OPTIMIZERS, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_optimizer_config_instantiates_steps_and_applies_weight_decay(make_cfg, name, extra):
    cfg = make_cfg(f"optimizer={name}", *extra, "optimizer.weight_decay=0.1", "lr=0.01")
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = make(cfg.optimizer)(params=list(model.parameters()))  # as the loop calls it
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["weight_decay"] == 0.1

    before = model.weight.detach().clone()
    for _ in range(3):  # a zero loss gradient: only the weight decay moves the weights
        optimizer.zero_grad()
        (model(torch.randn(5, 4)) * 0).sum().backward()
        optimizer.step()
    assert model.weight.norm() < before.norm()


# ---------------------------------------------------------------- schedulers
SCHEDULERS = [(name, []) for name in group("scheduler")] + [
    ("warmup", ["scheduler@scheduler.after=step"]),
    ("warmup", ["scheduler@scheduler.after=none"]),
]
EPOCHS, STEPS = 6, 5  # epochs and batches per epoch in the simulated loop


def run_schedule(scheduler, interval: str, optimizer, epochs: int = EPOCHS, start: int = 0) -> list[float]:
    """The lr at the start of each epoch, stepping the scheduler as runner.run.train does."""
    lrs = []
    for _ in range(start, epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(STEPS):
            optimizer.step()
            if interval == "step":
                scheduler.step()
        if interval == "epoch":
            scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])  # after the last epoch
    return lrs


def schedule_cfg(make_cfg, name: str, *extra: str):
    return make_cfg(f"scheduler={name}", *extra, f"epochs={EPOCHS}", "lr=0.1")


def build_schedule(cfg):
    """A fresh optimizer at lr 0.1 and the config's scheduler on it, built by the loop's own code."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    with execution_whitelist(TRUSTED_TARGETS):
        scheduler, interval = build_scheduler(cfg.scheduler, optimizer, STEPS)
    return scheduler, interval, optimizer


@pytest.mark.parametrize("name, extra", SCHEDULERS, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_scheduler_config_steps_and_resumes_from_a_weights_only_checkpoint(make_cfg, name, extra):
    cfg = schedule_cfg(make_cfg, name, *extra)
    whole = run_schedule(*build_schedule(cfg))
    assert all(math.isfinite(lr) and 0 <= lr <= 0.1 + 1e-12 for lr in whole)

    # Stop after 3 epochs, save as the loop does, load into fresh objects and carry on.
    scheduler, interval, optimizer = build_schedule(cfg)
    first = run_schedule(scheduler, interval, optimizer, epochs=3)
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    scheduler, interval, optimizer = build_schedule(cfg)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rest = run_schedule(scheduler, interval, optimizer, start=3)
    assert first[:-1] + rest == pytest.approx(whole)


def test_warmup_rises_linearly_then_cosine_ends_on_the_last_epoch(make_cfg):
    lrs = run_schedule(*build_schedule(schedule_cfg(make_cfg, "warmup")))
    # 2 warm-up epochs from 0.1 x lr, then cosine over the 4 epochs left, reaching 0 at the end.
    cosine = [0.05 * (1 + math.cos(math.pi * t / 4)) for t in range(5)]
    assert lrs == pytest.approx([0.01, 0.055] + cosine, abs=1e-9)


def test_a_run_shorter_than_its_warmup_only_warms_up(make_cfg):
    cfg = make_cfg("scheduler=warmup", "epochs=1", "lr=0.1")
    assert run_schedule(*build_schedule(cfg), epochs=1) == pytest.approx([0.01, 0.055])


def test_warmup_before_step_decay(make_cfg):
    cfg = schedule_cfg(make_cfg, "warmup", "scheduler@scheduler.after=step", "scheduler.after.step_size=2")
    lrs = run_schedule(*build_schedule(cfg))
    assert lrs == pytest.approx([0.01, 0.055, 0.1, 0.1, 0.01, 0.01, 0.001])


def test_onecycle_gets_the_steps_per_epoch_from_the_loop(make_cfg):
    scheduler, interval, optimizer = build_schedule(schedule_cfg(make_cfg, "onecycle"))
    assert interval == "step" and scheduler.total_steps == EPOCHS * STEPS
    lrs = [optimizer.param_groups[0]["lr"]]  # the lr each batch trains with
    for _ in range(EPOCHS * STEPS - 1):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] == pytest.approx(0.1 / 25 / 1e4)
    assert max(lrs) == pytest.approx(0.1, rel=0.01) and lrs.index(max(lrs)) == round(0.3 * EPOCHS * STEPS) - 1


def test_warmup_refuses_onecycle_which_warms_up_itself(make_cfg):
    with pytest.raises(ConfigError, match="onecycle"):
        build_schedule(schedule_cfg(make_cfg, "warmup", "scheduler@scheduler.after=onecycle"))


# ---------------------------------------------------------------- augmentation
def data_overrides(channels: int, size: int) -> list[str]:
    stats = ",".join(["0.5"] * channels)
    return [f"dataset.channels={channels}", f"dataset.image_size={size}",
            f"dataset.mean=[{stats}]", f"dataset.std=[{stats}]"]


@pytest.mark.parametrize("channels, size", [(1, 32), (3, 48)])
@pytest.mark.parametrize("name", group("augmentation"))
def test_augmentation_preset_returns_uint8_batches_of_the_same_shape(make_cfg, name, channels, size):
    cfg = make_cfg(f"augmentation={name}", *data_overrides(channels, size))
    augment = make(cfg.augmentation)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, channels, size, size), dtype=torch.uint8)
    given = x.clone()
    out = augment(given)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert out.equal(x) == (name == "none")
    assert given.equal(x)  # a new batch, never the caller's images changed in place


class CountingAugment(nn.Module):
    """Wraps the run's augmentation and counts the images that go through it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return self.inner(x)


@pytest.mark.parametrize("name", group("augmentation"))
def test_training_augments_training_batches_only_never_validation(make_cfg, tmp_path, monkeypatch, tiny_images,
                                                                   name):
    cfg = make_cfg(f"augmentation={name}", *tiny_images, "epochs=2", "device=cpu", "progress=false")
    real_instantiate = build_module.instantiate
    counters = []

    def spying(config, *args, **kwargs):
        obj = real_instantiate(config, *args, **kwargs)
        if config is cfg.augmentation:
            counters.append(CountingAugment(obj))
            return counters[-1]
        return obj

    monkeypatch.setattr(build_module, "instantiate", spying)
    assert train(cfg, tmp_path)["status"] == "completed"
    assert len(counters) == 1 and counters[0].images == 2 * TINY_TRAIN  # two epochs of training images, no more


def test_custom_pipeline_can_be_written_on_the_command_line(make_cfg):
    cfg = make_cfg("augmentation=custom", "augmentation.steps=[{_target_: data.augment.RandomCrop, padding: 2}]")
    augment = make(cfg.augmentation)
    assert isinstance(augment, Compose) and len(augment) == 1 and isinstance(augment[0], RandomCrop)
    assert augment[0].padding == 2


# ---------------------------------------------------------------- all of it in one run
def test_a_run_with_adamw_warmup_label_smoothing_and_clipping_completes(make_cfg, tmp_path, tiny_images):
    cfg = make_cfg("model=cnn5", *tiny_images, "optimizer=adamw", "scheduler=warmup", "augmentation=standard", "epochs=3",
                   "lr=0.002", "label_smoothing=0.1", "grad_clip=1.0", "device=cpu", "progress=false")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed"
    lrs = pd.read_csv(tmp_path / "metrics.csv")["lr"].tolist()
    assert lrs == pytest.approx([0.0002, 0.0011, 0.002])  # warm-up over epochs 1-2, then the cosine
