"""MNIST, CIFAR-10 and ImageFolder through torchvision's own classes and file formats.

Validation is a stratified split carved from train with a fixed seed; the official test split
is kept as `test`, never used for model selection.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torchvision

from common.errors import ConfigError
from data.base import ImageDataset, ImageSplits, cached_tensors, fingerprint, resize_uint8
from data.images import decode_images, file_signature

log = logging.getLogger(__name__)


class _InMemoryTorchvision(ImageDataset):
    """torchvision data sets that already hold their pixels in a `.data` array."""

    torchvision_class: type

    def _read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        root = self.require_root()
        try:
            ds = self.torchvision_class(str(root), train=train, download=self.download)
        except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
            raise ConfigError(
                f"dataset.root={root}: {str(e).rstrip('.')}; point dataset.root at the folder holding it, "
                f"or add dataset.download=true") from None
        data = torch.as_tensor(np.asarray(ds.data))
        images = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # -> N, C, H, W
        return resize_uint8(images, self.image_size), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    def _load(self) -> ImageSplits:
        images, labels = self._read(train=True)
        test_images, test_labels = self._read(train=False)
        train_idx, val_idx = self.stratified_split(labels.numpy())
        return ImageSplits(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx],
                           test_images, test_labels)


class MNIST(_InMemoryTorchvision):
    torchvision_class = torchvision.datasets.MNIST

    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]


class CIFAR10(_InMemoryTorchvision):
    torchvision_class = torchvision.datasets.CIFAR10

    def class_names(self) -> list[str]:  # torchvision reads them from the archive's meta file
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def visible_folders(directory: str | Path) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


class _VisibleClassFolders(torchvision.datasets.ImageFolder):
    """torchvision's ImageFolder, ignoring hidden folders (our cache sits in ROOT/.sweep_runner_cache)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = visible_folders(directory)
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: i for i, name in enumerate(classes)}


class ImageFolder(ImageDataset):
    """A class-per-folder tree: ROOT/train/<class>/... (or ROOT/<class>/...), test from ROOT/test or ROOT/val."""

    def _folders(self) -> tuple[Path, Path | None]:
        root = self.require_root()
        train = root / "train" if (root / "train").is_dir() else root
        test = next((root / n for n in ("test", "val") if (root / n).is_dir() and train != root), None)
        return train, test

    def class_names(self) -> list[str]:
        return visible_folders(self._folders()[0])

    def file_lists(self) -> dict[str, tuple[list[Path], list[int]]]:
        train_set, test_set = self._scan()
        labels = np.array(train_set.targets)
        train_idx, val_idx = self.stratified_split(labels)
        paths = [Path(p) for p, _ in train_set.samples]
        out = {"train": ([paths[i] for i in train_idx], labels[train_idx].tolist()),
               "val": ([paths[i] for i in val_idx], labels[val_idx].tolist())}
        if test_set is not None:
            out["test"] = ([Path(p) for p, _ in test_set.samples], list(test_set.targets))
        return out

    def _scan(self):
        train_dir, test_dir = self._folders()
        try:
            train_set = _VisibleClassFolders(str(train_dir))
            test_set = _VisibleClassFolders(str(test_dir)) if test_dir else None
        except (FileNotFoundError, RuntimeError) as e:
            raise ConfigError(f"dataset.root={self.root}: {e}; it needs one folder of images per class") from None
        if test_set is not None and test_set.classes != train_set.classes:
            raise ConfigError(f"{test_dir} has classes {test_set.classes[:5]}... unlike {train_dir}; "
                              f"make their class folders match")
        return train_set, test_set

    def _load(self) -> ImageSplits:
        train_set, test_set = self._scan()
        sources = [train_set.samples] + ([test_set.samples] if test_set else [])
        signature = file_signature([p for s in sources for p, _ in s], self.root)  # size and mtime of each image
        key = fingerprint(signature, [c for s in sources for _, c in s], self.image_size, self.channels,
                          self.skip_bad_images)
        cache = self.root / ".sweep_runner_cache" / f"imagefolder_{self.image_size}px_{self.channels}ch.pt"

        def build() -> dict[str, torch.Tensor]:
            log.info("decoding %s to %dx%d (once; cached at %s)", self.root, self.image_size, self.image_size, cache)
            out = {}
            for name, ds in (("train", train_set), ("test", test_set)):
                if ds is not None:
                    out[f"{name}_images"], kept = decode_images([p for p, _ in ds.samples], self.image_size,
                                                                self.channels, self.skip_bad_images)
                    out[f"{name}_labels"] = torch.tensor(ds.targets, dtype=torch.int64)[kept]
            return out

        t = cached_tensors(cache, key, build)
        train_idx, val_idx = self.stratified_split(t["train_labels"].numpy())
        images, labels = t["train_images"], t["train_labels"]
        return ImageSplits(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx],
                           t.get("test_images"), t.get("test_labels"), classes=list(train_set.classes))
