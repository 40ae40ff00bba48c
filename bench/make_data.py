#!/usr/bin/env python3
"""Write a MiniPlaces-shaped data set in the official on-disk layout, in parallel.

    python bench/make_data.py ROOT [--train-per-class 1000] [--val-per-class 100] [--classes 100]

Layout (as in the CSAILVision/miniplaces release, after `mv images miniplaces`):
  ROOT/train/<letter>/<category>/<NNNNNNNN>.jpg   128x128 RGB JPEG
  ROOT/val/<NNNNNNNN>.jpg
  ROOT/train.txt  lines "train/a/abbey/00000001.jpg 0"
  ROOT/val.txt    lines "val/00000001.jpg 0" (classes shuffled, as in the release)

Each image is class-dependent oriented stripes and colour under noise (the generator of the
course's `make_miniplaces.py`, not shipped here), so LeNet learns them, but not perfectly. Every
image draws from its own generator seeded by (seed, split, index), so the files are the same
whatever the number of processes, and more processes write them sooner. The list files are
written last, atomically: a ROOT with train.txt is complete. Used by bench/bench.py,
bench/fused.py and bench/gpu.py through `ensure_miniplaces`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a plain clone: the project's packages sit beside bench/
    sys.path.insert(0, str(REPO))

from common.io import atomic_write_text  # noqa: E402

SPLIT_IDS = {"train": 0, "val": 1}
CATEGORY_BASE = ["abbey", "airport_terminal", "amphitheater", "amusement_park", "aquarium", "aqueduct",
                 "art_gallery", "assembly_line", "auditorium", "badlands", "bakery_shop", "ballroom",
                 "bamboo_forest", "banquet_hall", "bar", "baseball_field", "bathroom", "beauty_salon",
                 "bedroom", "boat_deck"]


def category_names(classes: int) -> list[str]:
    """Scene-like names, unique past the first 20 by a numeric suffix."""
    return [f"{CATEGORY_BASE[i % len(CATEGORY_BASE)]}{'' if i < len(CATEGORY_BASE) else i}" for i in range(classes)]


def make_image(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    """Stripes whose angle and frequency encode the class, tinted by a class colour, under noise."""
    angle = math.pi * (label % 10) / 10.0
    frequency = 2 + (label // 10) % 10
    yy, xx = np.mgrid[0:size, 0:size] / size
    wave = np.sin(2 * math.pi * frequency * (xx * math.cos(angle) + yy * math.sin(angle))
                  + rng.uniform(0, 2 * math.pi))
    colour = np.array([(label * 37) % 255, (label * 91) % 255, (label * 53) % 255], dtype=np.float32) / 255.0
    pixels = 0.5 + 0.25 * wave[..., None] * (0.5 + colour[None, None, :])
    pixels += rng.normal(0, 0.18, size=pixels.shape)
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def _write_chunk(root: str, jobs: list[tuple[str, int, str, int]], seed: int, size: int) -> None:
    """Write (split, index, relative path, label) images; runs in a worker process."""
    for split, index, rel, label in jobs:
        rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
        make_image(rng, label, size).save(os.path.join(root, rel), quality=90)


def plan(classes: int, train_per_class: int, val_per_class: int) -> list[tuple[str, int, str, int]]:
    """Every image to write, as (split, index, path relative to ROOT, label), in list-file order."""
    names = category_names(classes)
    train = [("train", c * train_per_class + i, f"train/{names[c][0]}/{names[c]}/{i + 1:08d}.jpg", c)
             for c in range(classes) for i in range(train_per_class)]
    val = [("val", k, f"val/{k + 1:08d}.jpg", k // val_per_class) for k in range(classes * val_per_class)]
    return train + val


def write_miniplaces(root: Path, train_per_class: int, val_per_class: int = 10, classes: int = 100,
                     size: int = 128, seed: int = 0, processes: int | None = None) -> None:
    """Write the data set under `root` (see the module docstring); list files last."""
    root = Path(root)
    jobs = plan(classes, train_per_class, val_per_class)
    for rel in {os.path.dirname(rel) for _, _, rel, _ in jobs}:
        (root / rel).mkdir(parents=True, exist_ok=True)
    processes = processes or os.cpu_count() or 1
    # Many small chunks, so a slow process does not hold the others up at the end.
    chunk = max(1, min(500, math.ceil(len(jobs) / (processes * 8))))
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    if processes == 1:
        for part in chunks:
            _write_chunk(str(root), part, seed, size)
    else:
        with ProcessPoolExecutor(max_workers=processes) as pool:
            for future in [pool.submit(_write_chunk, str(root), part, seed, size) for part in chunks]:
                future.result()  # re-raises a worker's error here
    train_lines = [f"{rel} {label}" for split, _, rel, label in jobs if split == "train"]
    val_lines = [f"{rel} {label}" for split, _, rel, label in jobs if split == "val"]
    order = np.random.default_rng(seed).permutation(len(val_lines))  # the release's val.txt is not sorted by class
    atomic_write_text(root / "val.txt", "\n".join(val_lines[i] for i in order) + "\n")
    atomic_write_text(root / "train.txt", "\n".join(train_lines) + "\n")


def fail(message: str) -> NoReturn:
    """Bad input: one line naming what to change, exit status 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def ensure_miniplaces(root: Path, train_per_class: int, val_per_class: int, classes: int = 100) -> tuple[int, int]:
    """Write the data set unless `root` already holds one of this size; return (train, val) image counts.

    A `root` holding another size is refused rather than silently measured: pass another --root.
    """
    root = Path(root)
    want = (classes * train_per_class, classes * val_per_class)
    if (root / "train.txt").exists():
        have = (count_lines(root / "train.txt"), count_lines(root / "val.txt"))
        if have != want:
            fail(f"{root} holds {have[0]} train / {have[1]} val images, not {want[0]} / {want[1]}; "
                 f"pass another --root (or delete that folder)")
        return have
    started = time.perf_counter()
    write_miniplaces(root, train_per_class, val_per_class, classes)
    print(f"wrote {want[0]} train and {want[1]} val images under {root} in {time.perf_counter() - started:.1f} s "
          f"({os.cpu_count()} processes)", flush=True)
    return want


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (the release: 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=None, help="default: every CPU core")
    args = parser.parse_args()
    if min(args.classes, args.train_per_class, args.val_per_class, args.size) < 1:
        fail("--classes, --train-per-class, --val-per-class and --size must be at least 1")
    if (args.root / "train.txt").exists():
        fail(f"{args.root} already holds a data set (train.txt); pass another ROOT")
    started = time.perf_counter()
    write_miniplaces(args.root, args.train_per_class, args.val_per_class, args.classes, args.size, args.seed,
                     args.processes)
    print(f"wrote {args.classes * args.train_per_class} train and {args.classes * args.val_per_class} val images "
          f"under {args.root} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
