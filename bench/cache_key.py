"""What keying the decoded-image cache on every image's size and mtime costs: one stat per file.

    python bench/cache_key.py               # 100,000 empty files in a temporary folder
    python bench/cache_key.py --files 20000 --dir /data/miniplaces/train   # or stat a real tree

Prints the seconds for `data.images.file_signature` plus the fingerprint over it, which is
what every run of an image-file data set pays before reading its cache, on a warm and on a
second pass (the first pass right after creating the files is warm too; a cold disk cache,
e.g. right after a reboot or on a network file system, costs more).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.base import fingerprint  # noqa: E402
from data.images import file_signature  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="stat the files under this folder instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.dir is None:
            paths = []
            for i in range(args.files):
                folder = Path(tmp) / f"{i // 1000:03d}"
                if i % 1000 == 0:
                    folder.mkdir()
                path = folder / f"{i:08d}.jpg"
                path.touch()
                paths.append(path)
        else:
            paths = sorted(p for p in args.dir.rglob("*") if p.is_file())[: args.files]
        for attempt in (1, 2):
            t0 = time.perf_counter()
            key = fingerprint(file_signature(paths, None))
            print(f"pass {attempt}: {len(paths):,} files, stat + fingerprint {time.perf_counter() - t0:.3f} s "
                  f"(key {key})")


if __name__ == "__main__":
    main()
