#!/usr/bin/env python3
"""The reference to beat: one training run written the way the course's helper code does it.

    python bench/course_loop.py ROOT [--epochs 10] [--batch-size 32] [--lr 0.001] [--workers 0]
                                     [--seed 0] [--device auto|cpu|cuda]

Plain PyTorch, nothing from the runner, with the course's defaults (batch 32, lr 0.001, 10 epochs,
SGD momentum 0.9, seed 0, a DataLoader with no workers): a MiniPlaces folder (train.txt /
val.txt, JPEGs; bench/make_data.py writes one) decoded once into a cache of 32x32 images, then
a per-sample Dataset (PIL -> ToTensor -> RandomHorizontalFlip -> Normalize with ImageNet
statistics) behind torch.utils.data.DataLoader, LeNet-5 as the course specifies
(conv6-conv16-256-128-classes), cross-entropy, one validation pass per epoch, best validation
accuracy kept. It draws from the random generator in the same order as
the course's own `seed_loop.py` (not shipped here; the two were cross-checked in
docs/benchmarks.md), so on a CPU the same seed gives the same accuracies.

Prints one JSON line: {"epochs", "batch_size", "lr", "train_images_per_s", "epoch_s",
"best_val_acc", "load_s", "last_epoch_images_per_s", "workers", "device"}. The training time
excludes decoding and validation. Compare the runner with it on the same data, batch size and
epochs, in the same invocation on the same machine, as a ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a plain clone
    sys.path.insert(0, str(REPO))

from common.io import atomic_write_bytes  # noqa: E402

IMAGE_SIZE = 32
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class LeNet(nn.Module):
    """LeNet-5 as the course specifies; layers built in this order so a seed gives the course's weights."""

    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), dtype=np.uint8)


def load_split(root: Path, split: str) -> tuple[np.ndarray, list[int]]:
    """(N, 32, 32, 3) uint8 images and labels of one split, decoded once and cached beside the data.

    The cache is a plain .npz (no pickle: loading it runs no code) keyed on the list file's hash, so
    a rewritten data set is decoded again. Decoding is a one-off outside the timed loop, so it uses
    threads (PIL decodes outside the GIL) to spare the wall time, which counts on a GPU machine.
    """
    listing = (root / f"{split}.txt").read_bytes()
    key = hashlib.sha1(listing).hexdigest()
    cache = root / f"cached_{split}_course_loop_{IMAGE_SIZE}px.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                return saved["images"], saved["labels"].tolist()
    pairs = [line.split() for line in listing.decode().splitlines() if line.strip()]
    with ThreadPoolExecutor(max_workers=8) as pool:
        images = np.stack(list(pool.map(decode, [root / rel for rel, _ in pairs])))
    labels = [int(label) for _, label in pairs]
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=np.array(labels, dtype=np.int64), key=np.array(key))
    atomic_write_bytes(cache, buffer.getvalue())
    return images, labels


class MiniPlaces(Dataset):
    """Per-sample PIL transforms, as the course's Dataset does them."""

    def __init__(self, data: tuple[np.ndarray, list[int]], transform: transforms.Compose) -> None:
        self.images, self.labels = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {name} but CUDA is not available; pass --device cpu", file=sys.stderr)
        raise SystemExit(2)
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so an epoch's time includes its last steps (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(root: Path, epochs: int, batch_size: int, lr: float, workers: int, seed: int, device_name: str) -> dict:
    torch.manual_seed(seed)
    device = pick_device(device_name)
    started = time.perf_counter()
    train_data, val_data = load_split(root, "train"), load_split(root, "val")
    load_s = time.perf_counter() - started
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([transforms.ToTensor(), transforms.RandomHorizontalFlip(), normalize])
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    num_classes = max(train_data[1]) + 1
    train_loader = DataLoader(MiniPlaces(train_data, train_tf), batch_size=batch_size, shuffle=True,
                              num_workers=workers)
    val_loader = DataLoader(MiniPlaces(val_data, test_tf), batch_size=batch_size, shuffle=False, num_workers=workers)
    model = LeNet(num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    best, epoch_times = 0.0, []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        synchronize(device)
        epoch_times.append(time.perf_counter() - t0)
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        best = max(best, 100.0 * correct / len(val_data[1]))
    n_train, train_s = len(train_data[1]), sum(epoch_times)
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr,
            "train_images_per_s": round(n_train * epochs / train_s, 1), "epoch_s": round(train_s / epochs, 3),
            "best_val_acc": round(best, 2), "load_s": round(load_s, 2),
            "last_epoch_images_per_s": round(n_train / epoch_times[-1], 1), "workers": workers,
            "device": str(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    args = parser.parse_args()
    if not (args.root / "train.txt").exists():
        print(f"error: {args.root} has no train.txt; write a data set with python bench/make_data.py {args.root}",
              file=sys.stderr)
        raise SystemExit(2)
    if args.epochs < 1 or args.batch_size < 1 or args.workers < 0:
        print("error: --epochs and --batch-size must be at least 1, --workers at least 0", file=sys.stderr)
        raise SystemExit(2)
    print(json.dumps(train(args.root, args.epochs, args.batch_size, args.lr, args.workers, args.seed, args.device)))


if __name__ == "__main__":
    main()
