"""Shared helpers: compose the real Hydra config, run the real CLI, write tiny data sets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runner.config.schema  # noqa: F401  (registers the schema the config composes with)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")


@pytest.fixture
def make_cfg():
    """make_cfg(*overrides) -> the composed run config, exactly as `python -m runner` would see it."""
    from hydra import compose, initialize_config_dir

    def _make(*overrides: str):
        with initialize_config_dir(config_dir=CONF_DIR):
            return compose(config_name="config", overrides=["tensorboard=false", *overrides])

    return _make


def run_cli(*args: str, module: str = "runner", cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` the way a user does; returns the finished process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_sweep(sweep_dir: Path, *overrides: str, timeout: int = 600) -> str:
    """`python -m runner -m hydra.sweep.dir=DIR overrides...`, which must exit 0; returns its output."""
    proc = run_cli("-m", f"hydra.sweep.dir={sweep_dir}", *overrides, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def write_miniplaces(root: Path, classes: int = 3, train_per_class: int = 4, val_per_class: int = 2,
                     size: int = 128) -> Path:
    """A tiny MiniPlaces in the official layout: train.txt/val.txt and 128x128 JPEGs."""
    rng = np.random.default_rng(0)
    names = ["abbey", "bakery_shop", "canyon", "desert", "elevator"][:classes]
    train_lines, val_lines = [], []
    for c, name in enumerate(names):
        (root / "train" / name[0] / name).mkdir(parents=True, exist_ok=True)
        for i in range(train_per_class):
            rel = f"train/{name[0]}/{name}/{i + 1:08d}.jpg"
            colour = np.full((size, size, 3), 60 * c + 20, dtype=np.uint8)
            noise = rng.integers(0, 30, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(colour + noise).save(root / rel, quality=90)
            train_lines.append(f"{rel} {c}")
    (root / "val").mkdir(parents=True, exist_ok=True)
    k = 0
    for c in range(classes):
        for _ in range(val_per_class):
            k += 1
            rel = f"val/{k:08d}.jpg"
            Image.fromarray(np.full((size, size, 3), 60 * c + 30, dtype=np.uint8)).save(root / rel, quality=90)
            val_lines.append(f"{rel} {c}")
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "val.txt").write_text("\n".join(val_lines) + "\n")
    return root


def write_image_folder(root: Path, classes: int = 4, per_class: int = 20, size: int = 32) -> Path:
    """A tiny ROOT/train/<class>/ data set of RGB PNGs: each class a colour, plus noise."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / "train" / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 * c + 40, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "train" / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory) -> list[str]:
    """Overrides for a 3x32x32 image-folder data set: 4 classes, 64 training and 16 validation images."""
    root = write_image_folder(tmp_path_factory.mktemp("tiny_images"))
    return ["dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=32"]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 for the module's tests (tests/postgres_server.py)."""
    from postgres_server import MISSING, server_bin, temporary_postgres

    if server_bin() is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING)  # not a skip in CI, which installs the server (.ci/run)
        pytest.skip(MISSING)
    with temporary_postgres() as url:
        yield url
