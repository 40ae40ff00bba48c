"""A throwaway PostgreSQL server in a temporary folder, for the tests and bench/workers.py.

`with temporary_postgres() as url:` runs initdb and pg_ctl (as the `postgres` user when we are
root: the server refuses to run as root), listens on 127.0.0.1 on a free port with trust
authentication, and stops the server and deletes the folder afterwards. Nothing is installed: if
the server binaries are missing it raises with the package to install.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) not found: install them, e.g. "
           "`apt-get install -y postgresql` (Debian/Ubuntu), or put their folder on the PATH")


def server_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on the PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def temporary_postgres() -> Iterator[str]:
    """Start a server; yield its SQLAlchemy URL (database `postgres`, user `postgres`); stop it."""
    bindir = server_bin()
    if bindir is None:
        raise RuntimeError(MISSING)
    as_user: list[str] = []
    # /tmp itself, not pytest's tmp_path: that sits in a root-only folder the postgres user can't enter.
    data = Path(tempfile.mkdtemp(prefix="sweep-runner-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    pgdata = data / "data"
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, text=True)
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off -c max_connections=200"
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", options, "-l",
                        str(data / "server.log"), "-w", "-t", "60", "start"], check=True, capture_output=True, text=True)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                           capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{e.cmd[len(as_user)]} failed: {e.stderr.strip()}") from None
    finally:
        shutil.rmtree(data, ignore_errors=True)
