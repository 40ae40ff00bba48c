"""`python -m runner.dashboard SWEEP_DIR`: an Optuna search's study in a browser (optuna-dashboard).

    python -m runner.dashboard outputs/optuna/lenet_digits                   # SWEEP_DIR/optuna.db
    python -m runner.dashboard SWEEP_DIR --storage postgresql://host/db --port 8081

Serves optuna-dashboard (pip install 'optuna-dashboard==0.21.0', or the `dashboard` extra) on
http://HOST:PORT until Ctrl-C: every study in the storage, each trial's parameters, its
per-epoch validation accuracy (reported when a pruner is on) and its state, plots included. The
same as the plain `optuna-dashboard <storage URL>` line each Optuna sweep prints at its end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import entry_point


def storage_url(sweep_dir: Path, storage: str | None) -> str:
    """The storage to show: --storage, else the sweep dir's sqlite file (the sweeper's default)."""
    if storage:
        return storage
    db = sweep_dir / "optuna.db"
    if not db.exists():
        raise FileNotFoundError(f"no {db}; give the study's storage with --storage URL")
    return f"sqlite:///{db}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="an Optuna sweep dir (holding optuna.db)")
    parser.add_argument("--storage", help="storage URL (default: sqlite:///SWEEP_DIR/optuna.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        print(f"error: --port {args.port} is not a TCP port: use 1 to 65535, e.g. --port 8080", file=sys.stderr)
        return 2
    try:
        url = storage_url(args.sweep_dir, args.storage)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        from optuna_dashboard import run_server
    except ImportError:
        print("error: optuna-dashboard is not installed: pip install 'optuna-dashboard==0.21.0'", file=sys.stderr)
        return 2
    print(f"Optuna dashboard for {url} on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    run_server(url, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    with entry_point():  # anything unexpected: one line, the traceback in a file
        sys.exit(main())
