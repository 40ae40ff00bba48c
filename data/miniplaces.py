"""MiniPlaces in its official layout, decoded once to a uint8 cache beside the data.

ROOT/train.txt and ROOT/val.txt hold lines like ``train/a/abbey/00000001.jpg 0``; the JPEGs
(128x128) sit under ROOT/train/ and ROOT/val/. The cache file
``ROOT/.sweep_runner_cache/miniplaces_{size}.pt`` is keyed on the two list files, the size and
mtime of every listed image and the image size, so a changed list or image rebuilds it and a
second run starts in seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from common.errors import ConfigError
from data.base import ImageDataset, ImageSplits, cached_tensors, fingerprint
from data.images import check_list_entry, decode_images, file_signature

log = logging.getLogger(__name__)

# The course helper's sources: the images from MIT CSAIL, the lists from the CSAILVision repo.
DATA_URL = "http://miniplaces.csail.mit.edu/data/data.tar.gz"
DATA_MD5 = "265825ec94f79390e4f1e38045a69059"
LIST_URLS = {
    "train": "https://raw.githubusercontent.com/CSAILVision/miniplaces/master/data/train.txt",
    "val": "https://raw.githubusercontent.com/CSAILVision/miniplaces/master/data/val.txt",
}


def read_list(path: Path) -> tuple[list[str], list[int]]:
    """`relative/path.jpg LABEL` per line; a bad line is refused naming the file and line number."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text list of 'relative/path.jpg LABEL' lines") from None
    files, labels = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{path}:{n}: expected 'relative/path.jpg LABEL', got {line!r}")
        if not parts[1].isdecimal():  # digits only: no sign, no decimal point
            raise ConfigError(f"{path}:{n}: label {parts[1]!r} is not a class index; labels are whole numbers "
                              f"0, 1, 2, ...")
        files.append(check_list_entry(parts[0], f"{path}:{n}"))
        labels.append(int(parts[1]))
    if not files:
        raise ConfigError(f"{path} lists no images; it needs lines like 'train/a/abbey/00000001.jpg 0'")
    return files, labels


class MiniPlaces(ImageDataset):
    def download_files(self, root: Path) -> None:
        """Fetch the course's archive and lists (needs a network; say so plainly when there is none)."""
        from torchvision.datasets.utils import download_and_extract_archive, download_url

        root.mkdir(parents=True, exist_ok=True)
        try:
            if not (root / "train").is_dir():
                download_and_extract_archive(DATA_URL, download_root=str(root), md5=DATA_MD5)
                images = root / "images"  # the archive unpacks to images/{train,val,test}
                if images.is_dir():
                    for sub in images.iterdir():
                        sub.rename(root / sub.name)
            for split, url in LIST_URLS.items():
                if not (root / f"{split}.txt").exists():
                    download_url(url, str(root), filename=f"{split}.txt")
        except OSError as e:
            raise ConfigError(
                f"dataset.download=true but MiniPlaces could not be fetched ({e.__class__.__name__}: {e}); "
                f"download {DATA_URL} by hand and pass dataset.root=DIR") from None

    def _list_paths(self) -> dict[str, Path]:
        root = self.require_root()
        if self.download:
            self.download_files(root)
        lists = {s: root / f"{s}.txt" for s in ("train", "val")}
        for split, path in lists.items():
            if not path.exists():
                raise ConfigError(
                    f"dataset.root={root} has no {split}.txt; point dataset.root at the MiniPlaces folder "
                    f"(with train.txt, val.txt, train/, val/) or add dataset.download=true")
        return lists

    def class_names(self) -> list[str]:
        """Scene names from train.txt's paths (train/a/abbey/00000001.jpg is class 'abbey')."""
        files, labels = read_list(self._list_paths()["train"])
        names = {label: "/".join(Path(f).parts[2:-1]) or str(label) for f, label in zip(files, labels)}
        return [names.get(i, str(i)) for i in range(max(names) + 1)]

    def file_lists(self) -> dict[str, tuple[list[Path], list[int]]]:
        out = {}
        for split, path in self._list_paths().items():
            files, labels = read_list(path)
            out[split] = ([self.root / f for f in files], labels)
        return out

    def _load(self) -> ImageSplits:
        files = self.file_lists()
        # Keyed on every listed image's size and mtime as well as the lists: a replaced image rebuilds it.
        signatures = {split: (file_signature(paths, self.root), labels) for split, (paths, labels) in files.items()}
        key = fingerprint(signatures, self.image_size, self.channels, self.skip_bad_images)
        cache = self.root / ".sweep_runner_cache" / f"miniplaces_{self.image_size}px_{self.channels}ch.pt"

        def build() -> dict[str, torch.Tensor]:
            log.info("decoding MiniPlaces under %s to %dx%d (once; cached at %s)", self.root, self.image_size,
                     self.image_size, cache)
            out = {}
            for split, (paths, labels) in files.items():
                out[f"{split}_images"], kept = decode_images(paths, self.image_size, self.channels,
                                                             self.skip_bad_images)
                out[f"{split}_labels"] = torch.tensor(labels, dtype=torch.int64)[kept]
            return out

        t = cached_tensors(cache, key, build)
        return ImageSplits(t["train_images"], t["train_labels"], t["val_images"], t["val_labels"])
