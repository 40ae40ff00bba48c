"""Bad data and misleading defaults: each gets one line naming the file (and line) or the key, before training."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from hydra.utils import execution_whitelist, instantiate
from omegaconf import OmegaConf
from PIL import Image

from common.errors import ConfigError
from common.io import atomic_write_json, atomic_write_text
from data.base import ImageDataset
from data.splits import open_splits
from models.shape_check import check_image_size
from runner.config.schema import TRUSTED_TARGETS
from runner.run.train import train
from tests.conftest import run_cli, write_image_folder, write_miniplaces

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_memory():
    ImageDataset._memory.clear()
    yield
    ImageDataset._memory.clear()


def dataset(make_cfg, *overrides):
    with execution_whitelist(TRUSTED_TARGETS):
        return instantiate(make_cfg(*overrides).dataset)


def spoil(path, how: str) -> None:
    """Turn a good JPEG into a bad file the way disks and downloads do."""
    if how == "not an image":
        path.write_text("<html>404 Not Found</html>")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:400])
    elif how == "empty":
        path.write_bytes(b"")


def read_all(split) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*split.batches(4, shuffle=False, device=CPU))
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------- undecodable images
@pytest.mark.parametrize("how", ["not an image", "truncated", "empty"])
def test_a_bad_image_is_named_on_both_data_paths(make_cfg, tmp_path, how):
    root = write_miniplaces(tmp_path / "mp")
    bad = root / "train/b/bakery_shop/00000002.jpg"
    spoil(bad, how)
    overrides = ("dataset=miniplaces", f"dataset.root={root}", "dataset.num_classes=3")
    with pytest.raises(ConfigError, match=f"{bad}.*can't be decoded.*dataset.skip_bad_images=true"):
        dataset(make_cfg, *overrides).load()
    assert not list(root.glob(".sweep_runner_cache/*.pt"))  # nothing half-built was cached

    # Streamed: an empty file is refused while opening; others when their batch is reached, as the
    # same one line from a DataLoader worker process.
    with pytest.raises(ConfigError, match=f"^{bad} can't be decoded[^\n]*$"):
        read_all(open_splits(dataset(make_cfg, *overrides), "stream", CPU, num_workers=1)["train"])


@pytest.mark.parametrize("how", ["not an image", "empty"])
def test_skip_bad_images_leaves_them_out_and_keeps_labels_aligned(make_cfg, tmp_path, how):
    root = write_miniplaces(tmp_path / "mp")
    spoil(root / "train/b/bakery_shop/00000002.jpg", how)
    overrides = ("dataset=miniplaces", f"dataset.root={root}", "dataset.num_classes=3", "dataset.skip_bad_images=true")
    splits = dataset(make_cfg, *overrides).load()
    assert splits.train_labels.tolist() == [0] * 4 + [1] * 3 + [2] * 4
    streamed_x, streamed_y = read_all(open_splits(dataset(make_cfg, *overrides), "stream", CPU)["train"])
    assert torch.equal(streamed_y, splits.train_labels) and torch.equal(streamed_x, splits.train_images)


def test_a_bad_image_stops_the_cli_before_training_with_one_line(tmp_path):
    root = write_image_folder(tmp_path / "folder", classes=2, per_class=6, size=16)
    bad = root / "train/class1/3.png"
    bad.write_bytes(b"")
    run_dir = tmp_path / "run"
    proc = run_cli("dataset=imagefolder", f"dataset.root={root}", "epochs=1", "tensorboard=false",
                   f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"error: {bad} can't be decoded as an image (it is empty (0 bytes))" in proc.stderr
    assert not (run_dir / "checkpoint.pth.tar").exists() and "epoch 1/1" not in proc.stdout


# ---------------------------------------------------------------- list files
@pytest.mark.parametrize("line, needle", [
    ("train/a/abbey/00000001.jpg -1", "label '-1' is not a class index"),
    ("train/a/abbey/00000001.jpg 1.5", "label '1.5' is not a class index"),
    ("train/a/abbey/00000001.jpg abbey", "label 'abbey' is not a class index"),
    ("../outside.jpg 0", "'../outside.jpg' points outside dataset.root"),
    ("train/../../outside.jpg 0", "points outside dataset.root"),
    ("/etc/passwd 0", "'/etc/passwd' points outside dataset.root"),
])
def test_a_bad_list_line_is_named_by_file_and_line(make_cfg, tmp_path, line, needle):
    root = write_miniplaces(tmp_path / "mp")
    lines = (root / "train.txt").read_text().splitlines()
    lines[2] = line
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    for path in ("resident", "stream"):
        with pytest.raises(ConfigError, match=f"train.txt:3: .*{needle}".replace("(", r"\(").replace(")", r"\)")):
            open_splits(dataset(make_cfg, "dataset=miniplaces", f"dataset.root={root}"), path, CPU)


def test_an_empty_list_file_is_named(make_cfg, tmp_path):
    root = write_miniplaces(tmp_path / "mp")
    (root / "val.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match=f"{root / 'val.txt'} lists no images"):
        dataset(make_cfg, "dataset=miniplaces", f"dataset.root={root}").load()


def test_a_symlink_placed_inside_the_root_is_still_followed(make_cfg, tmp_path):
    root = write_miniplaces(tmp_path / "mp")
    elsewhere = tmp_path / "elsewhere.jpg"
    (root / "train/a/abbey/00000001.jpg").rename(elsewhere)
    (root / "train/a/abbey/00000001.jpg").symlink_to(elsewhere)
    assert len(dataset(make_cfg, "dataset=miniplaces", f"dataset.root={root}").load().train_labels) == 12


def test_a_one_class_data_set_is_refused_for_training(make_cfg, tmp_path):
    root = write_miniplaces(tmp_path / "mp", classes=1)
    for path in ("resident", "stream"):
        with pytest.raises(ConfigError, match="has only class 0; a classifier needs at least two classes"):
            train(make_cfg("dataset=miniplaces", f"dataset.root={root}", f"compute.data_path={path}", "epochs=1"),
                  tmp_path / path)


# ---------------------------------------------------------------- the decoded-image cache
@pytest.mark.parametrize("kind", ["miniplaces", "imagefolder"])
def test_the_cache_notices_a_changed_image(make_cfg, tmp_path, kind):
    if kind == "miniplaces":
        root = write_miniplaces(tmp_path / "mp")
        image, overrides = root / "train/a/abbey/00000001.jpg", ("dataset=miniplaces", "dataset.num_classes=3")
    else:
        root = write_image_folder(tmp_path / "folder", classes=2, per_class=5, size=16)
        image, overrides = root / "train/class0/0.png", ("dataset=imagefolder", "dataset.val_fraction=0.4")
    overrides += (f"dataset.root={root}",)
    before = dataset(make_cfg, *overrides).load()
    cache = next(root.glob(".sweep_runner_cache/*.pt"))
    built = cache.stat().st_mtime_ns

    ImageDataset._memory.clear()  # a later process, same files: the cache is reused as it is
    assert torch.equal(dataset(make_cfg, *overrides).load().train_images, before.train_images)
    assert cache.stat().st_mtime_ns == built

    # The same file name, new pixels (as when a data set is re-exported): the cache is rebuilt.
    Image.new("RGB", (128, 128) if kind == "miniplaces" else (16, 16), (255, 255, 255)).save(image)
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # clearly later, whatever the clock's resolution
    ImageDataset._memory.clear()
    after = dataset(make_cfg, *overrides).load()
    assert not torch.equal(after.train_images, before.train_images)
    assert after.train_images.float().mean() > before.train_images.float().mean()


# ---------------------------------------------------------------- sizes that can't work
def test_a_data_set_too_big_for_memory_is_refused_before_allocation(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.image_size=100000: 1,797 decoded .* GiB of memory .*"
                                          r"use a smaller dataset.image_size$"):
        train(make_cfg("dataset.image_size=100000", "model=simplevit", "model.patch_size=10000", "epochs=1"),
              tmp_path / "digits")
    root = write_miniplaces(tmp_path / "mp")
    with pytest.raises(ConfigError, match="dataset.image_size=100000: 12 decoded .* or compute.data_path=stream"):
        dataset(make_cfg, "dataset=miniplaces", f"dataset.root={root}", "dataset.image_size=100000").load()


def test_an_image_size_the_model_cannot_take_is_one_line(tmp_path):
    proc = run_cli("dataset.image_size=8", "epochs=1", "tensorboard=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "error: dataset.image_size=8 is too small for LeNet" in proc.stderr


def test_the_shape_check_is_generic_and_draws_no_random_numbers(make_cfg):
    # Any model: a 7x7 convolution can't run on 4x4 images.
    conv = OmegaConf.create({"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 7})
    with execution_whitelist(("torch.nn.*",)):
        with pytest.raises(ConfigError, match=r"dataset.image_size=4: Conv2d can't take 1x4x4 images \(.*Kernel size"):
            check_image_size(conv, 1, 4)
        check_image_size(conv, 1, 7)
    # A model with an operation meta tensors can't run (the custom conv's autocast query) is checked on CPU.
    cfg = make_cfg("model=custom_conv", "model.filters=4", "model.dense_units=8")
    state = torch.get_rng_state()
    with execution_whitelist(TRUSTED_TARGETS):
        check_image_size(cfg.model, 1, 32)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------- result files' permissions
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_result_files_get_the_mode_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"x": 1})
        with open(tmp_path / "plain.txt", "w") as f:  # what any other program would create
            f.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("a.txt", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_runs_files_are_readable_by_the_group_under_umask_022(make_cfg, tmp_path):
    old = os.umask(0o022)
    try:
        train(make_cfg("epochs=1"), tmp_path / "run")
    finally:
        os.umask(old)
    for name in ("summary.json", "config.yaml", "metrics.csv", "checkpoint.pth.tar"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


# ---------------------------------------------------------------- defaults
def test_digits_defaults_to_no_flip_and_the_command_line_still_wins(make_cfg):
    assert make_cfg().augmentation._target_ == "torch.nn.Identity"
    assert make_cfg("augmentation=flip").augmentation._target_ == "data.augment.RandomHorizontalFlip"
    assert make_cfg("dataset=miniplaces").augmentation._target_ == "data.augment.RandomHorizontalFlip"
    assert make_cfg("experiment=resnet50").augmentation._target_ == "data.augment.Compose"


def test_data_roots_default_outside_the_code_and_the_error_says_where(make_cfg, tmp_path, monkeypatch):
    for name in ("miniplaces", "mnist", "cifar10"):
        assert str(make_cfg(f"dataset={name}").dataset.root).startswith("datasets")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"dataset.root={tmp_path}/datasets/miniplaces does not exist: "
                                          f"the data is expected there .*{tmp_path}"):
        dataset(make_cfg, "dataset=miniplaces").load()


@pytest.mark.parametrize("exported, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_unless_the_user_says_otherwise(exported, expected):
    """Set before torch loads libgomp (which reads it once): `import runner` comes first in every entry point."""
    import subprocess
    import sys
    from tests.conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    if exported:
        env["OMP_WAIT_POLICY"] = exported
    code = "import sys, runner; assert 'torch' not in sys.modules; import os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected
