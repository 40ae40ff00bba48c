"""What every data set produces (`ImageSplits`) and the shared machinery to get there.

A data set config names a subclass of `ImageDataset` with `_target_`; its `load()` returns the
train/val(/test) splits as uint8 tensors of shape (N, C, H, W). Decoding happens once: the
result is cached on disk (`cached_tensors`) and, within one process, in memory, so later
trials of a sweep pay nothing for data.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import ConfigError
from data.images import require_memory

CACHE_FORMAT = 2  # bump when the cache layout changes, so old caches are rebuilt


@dataclass
class ImageSplits:
    """Decoded images (uint8, N x C x H x W) and int64 labels for each split."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return int(max(self.train_labels.max(), self.val_labels.max())) + 1

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])


class ImageDataset:
    """Base of every data set config. Subclasses implement `_load()`.

    The constructor takes every key of the data set's YAML file, so a config is one flat
    mapping; `channels`, `image_size`, `num_classes`, `mean` and `std` are what the model and
    the normalisation read.
    """

    _memory: "OrderedDict[tuple, ImageSplits]" = OrderedDict()
    _memory_size = 4

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 3,
        num_classes: int | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        root: str | None = None,
        download: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        skip_bad_images: bool = False,
    ) -> None:
        if int(image_size) < 1:
            raise ConfigError(f"dataset.image_size={image_size} must be a positive pixel count")
        if not 0.0 < float(val_fraction) < 1.0:
            raise ConfigError(f"dataset.val_fraction={val_fraction} must be between 0 and 1, e.g. 0.1")
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(f"dataset.mean/std need {channels} values (dataset.channels={channels})")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.root = None if root is None else Path(os.path.expanduser(str(root))).absolute()
        self.download = bool(download)
        self.val_fraction = float(val_fraction)
        self.split_seed = int(split_seed)
        self.skip_bad_images = bool(skip_bad_images)  # image-file data sets: leave undecodable files out

    # --- what subclasses provide -------------------------------------------------------
    def _load(self) -> ImageSplits:
        raise NotImplementedError

    def file_lists(self) -> dict[str, tuple[list[Path], list[int]]] | None:
        """Each split's image files and labels, for data sets read from image files.

        It lets a data set too big to hold in memory stream from disk instead (data/splits.py);
        data sets that come as arrays (digits, MNIST, CIFAR-10) return None and are always resident.
        """
        return None

    def class_names(self) -> list[str]:
        """A readable name per label, for pictures and tables; data sets with names override this."""
        return [str(i) for i in range(self.num_classes or 0)]

    # --- shared -----------------------------------------------------------------------
    def _key(self) -> tuple:
        return (type(self).__qualname__, str(self.root), self.image_size, self.channels, self.val_fraction,
                self.split_seed, self.skip_bad_images)

    def in_memory(self) -> bool:
        """Whether this process already holds the decoded splits (a later trial of a sweep)."""
        return self._key() in self._memory

    def load(self) -> ImageSplits:
        """The splits, from this process's memory, the disk cache, or the source files."""
        key = self._key()
        if key in self._memory:
            self._memory.move_to_end(key)
            splits = self._memory[key]
        else:
            splits = self._load()
            self._memory[key] = splits
            while len(self._memory) > self._memory_size:
                self._memory.popitem(last=False)
        self._check(splits)
        return splits

    def _check(self, splits: ImageSplits) -> None:
        if splits.channels != self.channels:
            raise ConfigError(
                f"dataset.channels={self.channels} but the images have {splits.channels}; "
                f"set dataset.channels={splits.channels}")
        self.check_labels(splits.num_classes)
        self.require_classes(splits.train_labels.tolist())

    def require_classes(self, train_labels: Sequence[int]) -> None:
        """A classifier needs at least two classes to learn anything: refuse a one-class training split."""
        present = set(train_labels)
        if len(present) < 2:
            what = f"only class {next(iter(present))}" if present else "no images"
            raise ConfigError(f"the training split of dataset.root={self.root} has {what}; a classifier needs "
                              f"at least two classes: check the data set's list or class folders")

    def check_labels(self, label_count: int) -> None:
        """Refuse labels the model's output layer can't represent; fill num_classes if left null."""
        if self.num_classes is None:
            self.num_classes = label_count
        elif label_count > self.num_classes:
            raise ConfigError(
                f"dataset.num_classes={self.num_classes} but the labels go up to "
                f"{label_count - 1}; set dataset.num_classes={label_count}")

    def require_root(self) -> Path:
        if self.root is None:
            raise ConfigError(f"dataset.root is not set; pass dataset.root=/path/to/{type(self).__name__.lower()}")
        if not self.root.exists() and not self.download:
            raise ConfigError(
                f"dataset.root={self.root} does not exist: the data is expected there (a relative root is "
                f"read from the folder you run in, {Path.cwd()}); put it there, point dataset.root at it "
                f"or add dataset.download=true")
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"dataset.root={self.root} is a file, not a folder: point dataset.root at the "
                              f"folder that holds the data set")
        return self.root

    def stratified_split(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Train and validation indices, stratified by class, fixed by `split_seed`."""
        from sklearn.model_selection import train_test_split

        indices = np.arange(len(labels))
        try:
            train_idx, val_idx = train_test_split(
                indices, test_size=self.val_fraction, random_state=self.split_seed, stratify=labels)
        except ValueError as e:  # too few images per class to stratify
            raise ConfigError(f"dataset.val_fraction={self.val_fraction} can't split {len(labels)} images "
                              f"by class ({str(e).splitlines()[0]}); use more images or another val_fraction") from None
        return np.sort(train_idx), np.sort(val_idx)


def fingerprint(*parts: object) -> str:
    """A short hash of whatever identifies a cache's source (file contents, sizes, options)."""
    h = hashlib.sha1(str(CACHE_FORMAT).encode())
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
    return h.hexdigest()[:16]


def cached_tensors(path: Path, key: str, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load tensors from `path` if it was built from the same source (`key`), else build and save."""
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            if blob.get("key") == key:
                return blob["tensors"]
        except Exception:  # a truncated or foreign file is rebuilt, never trusted
            pass
    tensors = build()
    from common.io import atomic_torch_save

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"key": key, "tensors": tensors}, path)
    return tensors


def resize_uint8(images: torch.Tensor, image_size: int, chunk: int = 1024) -> torch.Tensor:
    """(N, C, H, W) uint8 -> same at image_size (bilinear), for in-memory sources.

    Refused before allocating when the result can't fit in memory; resized `chunk` images at a
    time, so the float copies stay small (each image is resized on its own either way).
    """
    if images.shape[-1] == image_size and images.shape[-2] == image_size:
        return images.contiguous()
    require_memory(len(images), images.shape[1], image_size)
    out = torch.empty((len(images), images.shape[1], image_size, image_size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        resized = F.interpolate(images[start:start + chunk].float(), size=(image_size, image_size), mode="bilinear",
                                align_corners=False, antialias=True)
        out[start:start + chunk] = resized.round().clamp(0, 255).to(torch.uint8)
    return out
