"""Ctrl-C and SIGTERM end a run the same way: status `interrupted`, one line, a conventional exit code.

Schedulers (Slurm, Kubernetes, `timeout`) stop a job with SIGTERM; Python's default for it is
to die on the spot, leaving a run folder with no summary. The handler turns it into
`Terminated`, a KeyboardInterrupt, so the training loop's Ctrl-C path records the run.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, like SIGINT raises KeyboardInterrupt."""


EXIT_CODES = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}  # 130, 143 (shell convention)
current_run_dir: Path | None = None  # the run folder being trained in this process, for the one-line message


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def install_sigterm_handler() -> None:
    """Make SIGTERM raise Terminated (only the main thread may set handlers: else leave the default)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def exit_cleanly_when_interrupted() -> Iterator[None]:
    """Around the entry point: an interrupt prints one line to stderr and exits 130 (SIGINT) or 143 (SIGTERM)."""
    install_sigterm_handler()
    try:
        yield
    except KeyboardInterrupt as e:
        name = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
        where = f"; {current_run_dir} is recorded as interrupted" if current_run_dir is not None else ""
        print(f"interrupted by {name}{where}", file=sys.stderr)
        sys.exit(EXIT_CODES[name])
