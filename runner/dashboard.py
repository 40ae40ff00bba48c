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

from common.errors import ConfigError, entry_point
from runner.search.db import display_url, open_existing, storage_url


def check_port(text: str) -> int:
    """--port as a number a server can listen on, or ConfigError naming it."""
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"--port {text} is not a port number: use a whole number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is out of range: use a whole number from 1 to 65535")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="an Optuna sweep dir (holding optuna.db)")
    parser.add_argument("--storage", help="storage URL (default: sqlite:///SWEEP_DIR/optuna.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", default="8080", help="port to listen on, 1 to 65535 (default 8080)")
    args = parser.parse_args(argv)
    try:
        port = check_port(args.port)
        url = storage_url(args.sweep_dir, args.storage)
        storage = open_existing(url, "--storage" if args.storage else "")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        from optuna_dashboard import run_server
    except ImportError:
        print("error: optuna-dashboard is not installed: pip install 'optuna-dashboard==0.21.0'", file=sys.stderr)
        return 2
    print(f"Optuna dashboard for {display_url(url)} on http://{args.host}:{port}/ (Ctrl-C stops it)", flush=True)
    try:
        run_server(storage, host=args.host, port=port)
    except OSError as e:  # the port is taken, or the host is no address of this machine
        print(f"error: cannot listen on {args.host}:{port} ({e.strerror or e}): pick another --port, or a --host "
              "of this machine (127.0.0.1, 0.0.0.0)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    with entry_point():  # anything unexpected: one line, the traceback in a file
        sys.exit(main())
