"""How batches reach the training loop: resident tensors (the fast path) or streamed from files.

Resident: the whole split sits in memory as uint8 (on the GPU when training there and it fits);
shuffling and batching are tensor indexing, no DataLoader, no per-sample Python.
Streamed: for image-file data sets too big to hold, a torch DataLoader decodes files per sample
(PIL, in `num_workers` processes) into the same uint8 batches. Either way, augmentation and
normalisation then run per batch on the training device, so both paths train the same model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from common.errors import ConfigError
from data.base import ImageDataset
from data.images import BadImageError, available_memory_bytes, decode_image, require_files

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
STREAM_ABOVE_FRACTION_OF_RAM = 0.3  # auto: stream when the decoded set would take more of free memory


class Split(Protocol):
    labels: torch.Tensor

    def batches(self, batch_size: int, shuffle: bool, device: torch.device) -> Iterator[Batch]: ...


class ResidentSplit:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle: bool, device: torch.device) -> Iterator[Batch]:
        order = torch.randperm(len(self.labels)).to(self.images.device) if shuffle else None
        for start in range(0, len(self.labels), batch_size):
            if order is None:
                x, y = self.images[start:start + batch_size], self.labels[start:start + batch_size]
            else:
                idx = order[start:start + batch_size]
                x, y = self.images[idx], self.labels[idx]
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class FileImages(Dataset):
    """One image file per item, decoded and resized like the resident cache (PIL bilinear).

    A file that can't be decoded comes back as (None, its error message), so the error reaches
    the training process as one line from any DataLoader worker (`collate_decoded`).
    """

    def __init__(self, paths: list[Path], labels: list[int], image_size: int, channels: int) -> None:
        self.paths, self.targets = paths, labels
        self.image_size, self.channels = image_size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int | str]:
        try:
            return torch.from_numpy(decode_image(self.paths[i], self.image_size, self.channels)), self.targets[i]
        except BadImageError as e:
            return None, str(e)


def collate_decoded(items: list) -> tuple[Batch | None, list[str]]:
    """The batch of the images that decoded (None if none did), and the errors of those that didn't."""
    good = [item for item in items if item[0] is not None]
    return (default_collate(good) if good else None), [error for image, error in items if image is None]


class StreamedSplit:
    def __init__(self, images: FileImages, num_workers: int, skip_bad: bool = False) -> None:
        self.images, self.num_workers, self.skip_bad = images, num_workers, skip_bad
        self.labels = torch.tensor(images.targets, dtype=torch.int64)
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle: bool, device: torch.device) -> Iterator[Batch]:
        loader = DataLoader(self.images, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                            pin_memory=device.type == "cuda", collate_fn=collate_decoded)
        for batch, errors in loader:
            if errors and not self.skip_bad:
                raise ConfigError(errors[0])  # streamed files are decoded as they are reached, not up front
            for error in set(errors) - self.skipped:
                log.warning("left out (dataset.skip_bad_images=true): %s", error.split("; ")[0])
            self.skipped.update(errors)
            if batch is not None:
                x, y = batch
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def free_memory_bytes() -> int:
    return available_memory_bytes()


def open_splits(dataset: ImageDataset, data_path: str, device: torch.device, num_workers: int = 0,
                data_on_device: str = "auto") -> dict[str, Split]:
    """The data set's splits as resident or streamed `Split`s, as `data_path` (auto|resident|stream) says."""
    if data_path not in ("auto", "resident", "stream"):
        raise ConfigError(f"compute.data_path={data_path} is invalid: use auto, resident or stream")
    # A later trial of a sweep reuses the splits in memory without listing (or stat-ing) any file.
    resident_now = data_path == "resident" or (data_path == "auto" and dataset.in_memory())
    files = None if resident_now else dataset.file_lists()
    if data_path == "stream" and files is None:
        raise ConfigError(f"compute.data_path=stream needs an image-file data set (miniplaces, imagefolder), "
                          f"not {type(dataset).__name__}; use compute.data_path=resident")
    if files is not None:
        decoded = sum(len(paths) for paths, _ in files.values()) * dataset.channels * dataset.image_size ** 2
        if data_path == "stream" or decoded > STREAM_ABOVE_FRACTION_OF_RAM * free_memory_bytes():
            dataset.check_labels(max(max(labels) for _, labels in files.values()) + 1)
            dataset.require_classes(files["train"][1])
            out = {}
            for name, (paths, labels) in files.items():  # missing and empty files are refused before training
                kept = require_files(paths, dataset.root, dataset.skip_bad_images)
                if len(kept) < len(paths):
                    log.warning("left out %d empty image files of the %s split (dataset.skip_bad_images=true)",
                                len(paths) - len(kept), name)
                images = FileImages([paths[i] for i in kept], [labels[i] for i in kept], dataset.image_size,
                                    dataset.channels)
                out[name] = StreamedSplit(images, num_workers, dataset.skip_bad_images)
            return out
    splits = dataset.load()
    named = {"train": (splits.train_images, splits.train_labels), "val": (splits.val_images, splits.val_labels)}
    if splits.test_images is not None:
        named["test"] = (splits.test_images, splits.test_labels)
    return {name: ResidentSplit(*place(images, labels, device, data_on_device)) for name, (images, labels) in named.items()}


def place(images: torch.Tensor, labels: torch.Tensor, device: torch.device, data_on_device: str) -> Batch:
    """On CUDA, move a split to the GPU once when it fits (data_on_device auto) or is asked to (true);
    else pin it for fast copies."""
    if device.type != "cuda":
        return images, labels
    fits = images.numel() < 0.5 * torch.cuda.mem_get_info(device)[0]
    if data_on_device == "true" or (data_on_device == "auto" and fits):
        return images.to(device), labels.to(device)
    return images.pin_memory(), labels.pin_memory()
