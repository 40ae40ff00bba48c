"""Each loader reads tiny files written here in the official on-disk format, through the real code."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision
from hydra.utils import execution_whitelist, instantiate
from PIL import Image

from common.errors import ConfigError
from data.base import ImageDataset
from runner.config.schema import TRUSTED_TARGETS
from runner.run.train import train
from tests.conftest import write_miniplaces


@pytest.fixture(autouse=True)
def fresh_memory():
    ImageDataset._memory.clear()
    yield
    ImageDataset._memory.clear()


def load(make_cfg, *overrides):
    cfg = make_cfg(*overrides)
    with execution_whitelist(TRUSTED_TARGETS):
        return instantiate(cfg.dataset).load()


def test_digits_is_stratified_and_offline(make_cfg):
    splits = load(make_cfg)
    assert splits.train_images.shape[1:] == (1, 32, 32) and splits.train_images.dtype == torch.uint8
    assert len(splits.train_labels) + len(splits.val_labels) == 1797
    val_share = torch.bincount(splits.val_labels, minlength=10) / torch.bincount(splits.train_labels, minlength=10)
    assert torch.allclose(val_share, torch.full((10,), 0.25), atol=0.03)


def test_miniplaces_reads_the_official_layout_and_caches_it(make_cfg, tmp_path, monkeypatch):
    root = write_miniplaces(tmp_path / "miniplaces")
    splits = load(make_cfg, "dataset=miniplaces", f"dataset.root={root}")
    assert splits.train_images.shape == (12, 3, 32, 32) and splits.val_images.shape == (6, 3, 32, 32)
    assert splits.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # Same resize as the course code: PIL bilinear to 32x32.
    first = np.array(Image.open(root / "train/a/abbey/00000001.jpg").convert("RGB").resize((32, 32), Image.BILINEAR))
    assert torch.equal(splits.train_images[0], torch.from_numpy(first).permute(2, 0, 1))
    assert list((root / ".sweep_runner_cache").glob("miniplaces_32px_3ch.pt"))

    # A second process (memory cleared) reads the cache and decodes nothing.
    ImageDataset._memory.clear()
    monkeypatch.setattr("data.miniplaces.decode_images", lambda *a: pytest.fail("decoded again"))
    again = load(make_cfg, "dataset=miniplaces", f"dataset.root={root}")
    assert torch.equal(again.train_images, splits.train_images)

    # Changing the list invalidates the cache.
    ImageDataset._memory.clear()
    monkeypatch.undo()
    (root / "train.txt").write_text("\n".join((root / "train.txt").read_text().splitlines()[:6]) + "\n")
    assert len(load(make_cfg, "dataset=miniplaces", f"dataset.root={root}").train_labels) == 6


def test_miniplaces_without_list_files_says_what_to_do(make_cfg, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no train.txt"):
        load(make_cfg, "dataset=miniplaces", f"dataset.root={tmp_path / 'empty'}")


def test_a_lenet_trains_on_a_miniplaces_folder(make_cfg, tmp_path):
    root = write_miniplaces(tmp_path / "miniplaces")
    summary = train(make_cfg("dataset=miniplaces", f"dataset.root={root}", "dataset.num_classes=3", "epochs=2",
                             "batch_size=4"), tmp_path / "run")
    assert summary["status"] == "completed" and summary["epochs_done"] == 2


def write_idx(path, array: np.ndarray) -> None:
    kind = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_idx_files(make_cfg, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    with pytest.raises(ConfigError, match="dataset.val_fraction=0.1"):  # 4 val images can't cover 10 classes
        load(make_cfg, "dataset=mnist", f"dataset.root={tmp_path}")
    splits = load(make_cfg, "dataset=mnist", f"dataset.root={tmp_path}", "dataset.val_fraction=0.25")
    assert splits.train_images.shape == (30, 1, 28, 28) and splits.val_images.shape == (10, 1, 28, 28)
    assert splits.test_images.shape == (10, 1, 28, 28)
    assert sorted(splits.val_labels.tolist()) == sorted(set(splits.val_labels.tolist()))  # stratified: distinct


def test_cifar10_reads_python_batches(make_cfg, tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    pixels = {}
    for name in names:
        data = rng.integers(0, 255, (10, 3072), dtype=np.uint8)
        pixels[name] = data
        with open(folder / name, "wb") as f:
            # The official batches are Python 2 pickles, whose keys read back as str under latin1.
            pickle.dump({"data": data, "labels": list(range(10))}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    # torchvision checks the official files' md5 sums; ours are stand-ins with the same format.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    splits = load(make_cfg, "dataset=cifar10", f"dataset.root={tmp_path}", "dataset.val_fraction=0.2")
    assert len(splits.train_labels) + len(splits.val_labels) == 50
    assert splits.test_images.shape == (10, 3, 32, 32)
    # CHW from the row-major 3072 bytes, as CIFAR defines them.
    assert torch.equal(splits.test_images[0], torch.from_numpy(pixels["test_batch"][0].reshape(3, 32, 32)))


def test_imagefolder_tree_with_test_folder(make_cfg, tmp_path):
    for split, n in (("train", 5), ("test", 2)):
        for c, name in enumerate(["Amphibia", "Aves", "Fungi"]):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (50 + i, 40), (80 * c, 10, 10)).save(d / f"{i}.jpg")
    cfg = make_cfg("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.image_size=24", "dataset.val_fraction=0.4")
    with execution_whitelist(TRUSTED_TARGETS):
        splits = instantiate(cfg.dataset).load()
    assert splits.classes == ["Amphibia", "Aves", "Fungi"]
    assert splits.train_images.shape[1:] == (3, 24, 24)
    assert torch.bincount(splits.val_labels).tolist() == [2, 2, 2]
    assert splits.test_images.shape == (6, 3, 24, 24)
    summary = train(make_cfg("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.image_size=24",
                             "dataset.val_fraction=0.4", "epochs=1", "batch_size=4"), tmp_path / "run")
    assert summary["status"] == "completed"
    assert "num_classes: 3" in (tmp_path / "run" / "config.yaml").read_text()


def test_streamed_and_resident_paths_see_the_same_pixels_and_reach_the_same_accuracy(make_cfg, tmp_path):
    from data.splits import StreamedSplit, open_splits

    root = write_miniplaces(tmp_path / "miniplaces", classes=3, train_per_class=12, val_per_class=4)
    cfg = make_cfg("dataset=miniplaces", f"dataset.root={root}", "dataset.num_classes=3")
    with execution_whitelist(TRUSTED_TARGETS):
        streamed = open_splits(instantiate(cfg.dataset), "stream", torch.device("cpu"))
        resident = open_splits(instantiate(cfg.dataset), "resident", torch.device("cpu"))
    assert isinstance(streamed["train"], StreamedSplit)
    x_stream, y_stream = next(streamed["val"].batches(100, shuffle=False, device=torch.device("cpu")))
    x_res, y_res = next(resident["val"].batches(100, shuffle=False, device=torch.device("cpu")))
    assert torch.equal(x_stream, x_res) and torch.equal(y_stream, y_res)

    accuracy = {}
    for path in ("stream", "resident"):
        summary = train(make_cfg("dataset=miniplaces", f"dataset.root={root}", "dataset.num_classes=3", "epochs=6",
                                 "batch_size=4", "lr=0.01", f"compute.data_path={path}"), tmp_path / path)
        accuracy[path] = summary["best_val_acc"]
    assert accuracy["resident"] >= 90.0
    assert abs(accuracy["stream"] - accuracy["resident"]) <= 10.0


def test_streaming_an_array_data_set_is_refused(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="compute.data_path=stream needs an image-file data set"):
        train(make_cfg("compute.data_path=stream", "epochs=1"), tmp_path)


def test_imagefolder_flat_layout_loads_twice_with_its_cache_inside(make_cfg, tmp_path):
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("RGB", (20, 20), (100 * c, 0, 0)).save(tmp_path / name / f"{i}.png")
    overrides = ("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.image_size=16", "dataset.val_fraction=0.5")
    first = load(make_cfg, *overrides)
    assert (tmp_path / ".sweep_runner_cache").is_dir()
    ImageDataset._memory.clear()
    second = load(make_cfg, *overrides)  # the cache folder is not taken for a third class
    assert second.num_classes == 2 and torch.equal(first.train_images, second.train_images)
