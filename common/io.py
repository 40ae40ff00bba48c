"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


def _umask_mode() -> int:
    """The mode `open()` would give a new file: 0666 less the process umask."""
    try:  # Linux reports the umask without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them to the usual handlers.

    A KeyboardInterrupt inside `torch.save` makes its zip writer's cleanup raise a RuntimeError
    ("unexpected pos") that hides the interrupt, so a run stopped there ended `failed` with a
    traceback instead of `interrupted`. Writes are short; the signal arrives a moment later.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN and handler is not None:
            signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        for sig in held:
            signal.raise_signal(sig)


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    with _interrupts_held():  # a signal lands after the rename: the new file is whole and in place
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, mode) as f:
                write(f)
                f.flush()
                # mkstemp creates the file 0600; a result file should read like any other the user writes.
                os.fchmod(f.fileno(), _umask_mode())
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text), "w")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), "wb")


def atomic_save_figure(figure: Any, path: Path, dpi: int) -> None:
    """A matplotlib Figure as a PNG, written like every other result file."""
    _atomic(path, lambda f: figure.savefig(f, dpi=dpi, format="png"), "wb")


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic(path, lambda f: torch.save(obj, f), "wb")


# What a write killed before its rename leaves: `_atomic`'s `.NAME.*.tmp`, and the `.NAME.tmp.png`
# that plots are saved to before their rename.
STALE_TEMP_PATTERNS = (".*.tmp", ".*.tmp.png")  # the second: figures as earlier versions wrote them


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files a killed atomic write left in `folder` (not below it); return them.

    Call it only where no other process is writing into `folder`: a run folder at its start.
    """
    stale = [p for pattern in STALE_TEMP_PATTERNS for p in Path(folder).glob(pattern) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def temp_files_of(path: Path) -> list[Path]:
    """The temporary files that atomic writes of `path` left, killed before their rename."""
    import glob

    return [p for p in Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*.tmp") if p.is_file()]
