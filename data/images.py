"""Image files on disk: decoding that names the bad file, and the checks that run before any decoding.

A file that can't be decoded (not an image, truncated, zero bytes) stops the run with one line
naming it, or, with `dataset.skip_bad_images=true`, is left out with a warning. List entries
may not leave `dataset.root`; a decoded set that can't fit in memory at `dataset.image_size` is
refused before its tensor is allocated.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from common.errors import ConfigError

log = logging.getLogger(__name__)

SKIP_HINT = "replace or delete it, or pass dataset.skip_bad_images=true to leave bad images out"
# What PIL raises for a file it can't read as an image: not an image (UnidentifiedImageError is an
# OSError), truncated data (OSError), a corrupt header (SyntaxError, ValueError), a decompression bomb.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class BadImageError(ConfigError):
    """One image file that can't be decoded; the message names it and the fix."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path} can't be decoded as an image ({reason}); {SKIP_HINT}")
        self.path = str(path)


def decode_image(path: str | Path, image_size: int, channels: int) -> np.ndarray:
    """One file -> (C, H, W) uint8, resized like the course code (PIL bilinear)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")  # convert() loads: truncation shows here
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            arr = np.array(im, dtype=np.uint8)  # a writable copy: torch warns on read-only arrays
    except DECODE_ERRORS as e:
        size = os.stat(path).st_size if os.path.exists(path) else None
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = "it is empty (0 bytes)" if size == 0 else f"{type(e).__name__}: {detail}"
        raise BadImageError(path, reason) from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def decode_images(paths: Sequence[str | Path], image_size: int, channels: int,
                  skip_bad: bool = False) -> tuple[torch.Tensor, list[int]]:
    """Many files -> (N, C, H, W) uint8 and the indices of `paths` it holds (all of them unless
    `skip_bad` left some out). PIL decodes outside the GIL, so threads help."""
    require_memory(len(paths), channels, image_size, streamable=True)
    out = np.empty((len(paths), channels, image_size, image_size), dtype=np.uint8)

    def one(i: int) -> BadImageError | None:
        try:
            out[i] = decode_image(paths[i], image_size, channels)
        except BadImageError as e:
            if not skip_bad:
                raise
            return e
        return None

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        errors = list(pool.map(one, range(len(paths))))
    bad = [i for i, e in enumerate(errors) if e is not None]
    if not bad:
        return torch.from_numpy(out), list(range(len(paths)))
    log.warning("left out %d of %d images that can't be decoded (dataset.skip_bad_images=true), e.g. %s",
                len(bad), len(paths), errors[bad[0]].path)
    kept = sorted(set(range(len(paths))) - set(bad))
    return torch.from_numpy(out[kept]), kept


def require_files(paths: Sequence[Path], root: Path | None, skip_bad: bool = False) -> list[int]:
    """Check every listed image exists and is not empty, before any decoding (one stat each).

    A missing file always stops the run (the list is wrong); an empty one stops it unless
    `skip_bad`. Returns the indices of the files to use.
    """
    kept = []
    for i, path in enumerate(paths):
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise ConfigError(f"{path} is listed but missing under dataset.root={root}; "
                              f"restore it or fix the data set's list") from None
        if size > 0:
            kept.append(i)
        elif not skip_bad:
            raise BadImageError(path, "it is empty (0 bytes)")
    return kept


def file_signature(paths: Sequence[str | Path], root: Path | None) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each file: a cache keyed on it is rebuilt when any image changes.

    One stat per file, so a check costs time in proportion to the number of files, more on a cold
    disk (bench/cache_key.py measures it).
    """
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ConfigError(f"{path} is listed but missing under dataset.root={root}; "
                              f"restore it or fix the data set's list") from None
        out.append((str(path), st.st_size, st.st_mtime_ns))
    return out


def check_list_entry(entry: str, where: str) -> str:
    """A list file's image path must stay inside dataset.root: no absolute paths, no `..` steps.

    The check is on the text, so a symlink the owner of the data placed inside the root still works.
    """
    pure = PurePosixPath(entry.replace("\\", "/"))
    if pure.is_absolute() or entry[1:3] == ":/" or entry[1:3] == ":\\" or ".." in pure.parts:
        raise ConfigError(f"{where}: image path {entry!r} points outside dataset.root; "
                          f"list paths relative to the root, like train/a/abbey/00000001.jpg")
    return entry


def available_memory_bytes() -> int:
    """Memory the kernel can give without swapping (MemAvailable: free plus reclaimable page cache)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def require_memory(count: int, channels: int, image_size: int, streamable: bool = False) -> None:
    """Refuse a decoded set (count x channels x image_size^2 uint8) bigger than the memory available."""
    needed = count * channels * image_size * image_size
    available = available_memory_bytes()
    if needed > 0.9 * available:
        fix = "use a smaller dataset.image_size" + (" or compute.data_path=stream" if streamable else "")
        raise ConfigError(f"dataset.image_size={image_size}: {count:,} decoded {channels}x{image_size}x{image_size} "
                          f"images need {needed / 2**30:,.1f} GiB of memory but {available / 2**30:,.1f} GiB "
                          f"is available; {fix}")
