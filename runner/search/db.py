"""A study's database: URLs whose paths stay paths, safe first use by many workers, one-line errors.

* `sqlite_url` / `study_url`: a folder name is a path, whatever it holds. Hydra's sweep dir is
  pasted into the default `sqlite:///${hydra.sweep.dir}/optuna.db`; a `?` or `#` in it would make
  the rest of the path URL options (the database would land outside the sweep dir, shared by every
  sweep dir with the same prefix). The sweep dir part is percent-quoted, which SQLAlchemy decodes
  back into the exact path.
* `setting_up`: creating the schema and the study is serialised across processes and machines.
  Optuna creates its tables with "create if missing", which races when N workers start on a fresh
  database at the same second (a PostgreSQL enum type created twice, sqlite's `alembic_version`
  row inserted twice). A lock rather than a retry on those errors: the race fails in many ways
  (each database, each step of the schema), while a lock makes the one-time setup plainly
  sequential and costs a few milliseconds per worker start. PostgreSQL: a session advisory lock on
  a fixed key, taken on the same URL, so workers on different machines wait for each other; the
  server drops it if its worker dies. sqlite: an `flock` on `<database>.lock` beside the file
  (sqlite works on one machine's files anyway).
* `storage_error`: a database error while opening a storage, as one line naming the URL and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Iterator

from common.errors import ConfigError

# Any fixed 64-bit number: the key of the PostgreSQL advisory lock that every worker's setup takes.
PG_SETUP_LOCK = 0x5357_5052_4F50_5455  # "SWPROPTU"
# What pysqlite reads from a sqlite URL's query; anything else would be dropped with a warning.
SQLITE_OPTIONS = {"timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements", "uri"}
KINDS = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB or mysql://USER:PASSWORD@HOST/DB"


def sqlite_url(path: str | os.PathLike) -> str:
    """`sqlite:///` + the path, percent-quoted, so every character of it (`?`, `#`, `%`, ...) stays path."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def study_url(storage: str, sweep_dir: str | os.PathLike | None) -> str:
    """The storage URL with the sweep dir part of a sqlite URL quoted as a path.

    `sqlite:///{sweep_dir}/optuna.db` (the default, or typed with the sweep dir in it) is the file
    optuna.db inside the sweep dir, whatever characters the sweep dir's name holds.
    """
    if sweep_dir is None:
        return storage
    prefix = f"sqlite:///{sweep_dir}"
    if storage.startswith(prefix + "/"):
        return sqlite_url(sweep_dir) + storage[len(prefix):]
    return storage


def display_url(storage: Any) -> str:
    """The storage as it can be shown and written down: a URL without its password."""
    if storage is None:
        return "memory (no resume)"
    if not isinstance(storage, str):
        return type(storage).__name__
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:
        return storage.split("@")[-1] if "@" in storage else storage


def check_url(url: str, key: str = "hydra.sweeper.storage") -> Any:
    """The parsed URL, or ConfigError for a URL that is none, of an unknown kind, or a sqlite URL
    whose `?...` part is not sqlite options (then it was meant as part of the path)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(f"{_named(key, url)} names an unknown kind of database ('{url.split(':')[0]}'): "
                          f"use {KINDS}") from None
    except (ArgumentError, ValueError) as e:
        raise ConfigError(f"{_named(key, url)} is not a storage URL ({_first_line(e)}): use {KINDS}") from None
    check_driver(url, key)
    if parsed.get_backend_name() == "sqlite" and "?" in url and parsed.query.get("uri") != "true":
        query = url.split("?", 1)[1]
        # SQLAlchemy drops what is no `key=value` option silently, and pysqlite ignores unknown keys.
        if any(not sep or name not in SQLITE_OPTIONS for name, sep, _ in (p.partition("=") for p in query.split("&"))):
            raise ConfigError(f"{key}={url}: '?{query}' reads as URL options, not as part of the file's "
                              "path: write ? as %3F (and % as %25) in a sqlite path")
    return parsed


def check_sqlite_file(path: Path, url: str, key: str = "hydra.sweeper.storage") -> None:
    """ConfigError for a path that is a folder, or a file that is not an SQLite database: found before
    anything is written beside it (an empty file is fine: sqlite makes it a database)."""
    if path.is_dir():
        raise ConfigError(f"{_named(key, url)}: {path} is a folder: name the database file in it, e.g. {path}/optuna.db")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"{_named(key, url)}: cannot read {path} ({e.strerror}): check the path and its "
                          "permissions") from None
    if header and header != b"SQLite format 3\x00":
        raise ConfigError(f"{_named(key, url)}: {path} is not an SQLite database: give an Optuna study's "
                          "database file (optuna.db), or a path where a new one may be created")


def check_driver(url: str, key: str = "hydra.sweeper.storage") -> None:
    """A postgresql:// URL needs psycopg (SQLAlchemy 2.1's default PostgreSQL driver): say how to get it."""
    if not url.startswith("postgresql"):
        return
    from sqlalchemy.engine import make_url

    driver = make_url(url).get_dialect().driver
    try:
        __import__(driver)
    except ImportError:
        fix = ("pip install 'psycopg[binary]>=3' (pip install -e '.[postgres]')" if driver == "psycopg" else
               f"pip install {driver}, or use psycopg 3: postgresql+psycopg://... and pip install -e '.[postgres]'")
        raise ConfigError(f"{key}=...@{url.split('@')[-1]} needs the PostgreSQL driver {driver}: {fix}") from None


def sqlite_file(url: str) -> Path | None:
    """The file a sqlite URL names; None for other databases and in-memory sqlite."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):  # a SQLite URI (uri=true): its path, without options
        database = database[len("file:"):].split("?", 1)[0]
    return Path(database)


@contextlib.contextmanager
def setting_up(url: str, key: str = "hydra.sweeper.storage") -> Iterator[None]:
    """Hold the database's setup lock (see the module's notes), with `one_line_errors`: wrap the
    storage's creation and create_study(load_if_exists=True) in it."""
    with one_line_errors(url, key), _setup_lock(url, key):
        yield


@contextlib.contextmanager
def one_line_errors(url: str, key: str = "hydra.sweeper.storage") -> Iterator[None]:
    """Turn a database error raised inside into a ConfigError naming `key`, the URL and the fix."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as e:
        error = storage_error(url, e, key)
        if error is None:
            raise
        raise error from None


def open_existing(url: str, key: str) -> Any:
    """An Optuna storage that must exist already, opened as it is (no tables created, no file made),
    e.g. to show or report it; ConfigError for a missing file or one that is no study database."""
    import optuna

    check_url(url, key)
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"{_named(key, url)}: no file {path} (sqlite would create an empty one): "
                          "give the sweep's optuna.db")
    if path is not None:
        check_sqlite_file(path, url, key)
    with one_line_errors(url, key):
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)  # its version check reads the tables
        storage.get_all_studies()
    return storage


@contextlib.contextmanager
def _setup_lock(url: str, key: str) -> Iterator[None]:
    backend = check_url(url, key).get_backend_name()
    # Optuna loads its table models and alembic lazily, and slowly: load them before the lock,
    # so that N workers starting together wait for each other's database work only.
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # as Optuna sets it: no plugin list in the log
    import alembic.command  # noqa: F401
    import alembic.migration  # noqa: F401
    import alembic.script  # noqa: F401
    import optuna.storages._rdb.models  # noqa: F401
    if backend == "postgresql":
        import sqlalchemy
        from sqlalchemy.engine import make_url

        # libpq waits for an unreachable host without end: give up after a while, with one line.
        timeout = {"connect_timeout": 20} if make_url(url).get_driver_name() in ("psycopg", "psycopg2") else {}
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=timeout)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": PG_SETUP_LOCK})
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": PG_SETUP_LOCK})
        finally:
            engine.dispose()
        return
    path = sqlite_file(url) if backend == "sqlite" else None
    if path is None:
        yield
        return
    check_sqlite_file(path, url, key)
    path.parent.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
    try:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a folder we may not write into: a database there is only read, no setup to race
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def storage_error(url: str, error: BaseException, key: str = "hydra.sweeper.storage") -> ConfigError | None:
    """One line for a database error met while opening a storage; None for an error of another kind."""
    import sqlalchemy.exc

    cause = error.__cause__ if isinstance(error.__cause__, sqlalchemy.exc.SQLAlchemyError) else error
    shown = _named(key, url)
    if isinstance(cause, (sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError)):
        try:
            check_url(url, key)
        except ConfigError as e:
            return e
    if not isinstance(cause, sqlalchemy.exc.SQLAlchemyError):
        if isinstance(error, RuntimeError) and "optuna storage upgrade" in str(error):  # an older schema
            return ConfigError(f"{shown}: {_first_line(error)}")
        return None
    message = _first_line(getattr(cause, "orig", None) or cause)
    path = sqlite_file(url) if url.startswith("sqlite") else None
    if path is not None:
        if "not a database" in message or "malformed" in message:
            return ConfigError(f"{shown}: {path} is not an SQLite database ({message}): "
                               "give an Optuna study's database file, or a path where a new one may be created")
        if "no such table" in message:
            return ConfigError(f"{shown}: {path} holds no Optuna study: give the sweep's optuna.db")
        return ConfigError(f"{shown}: cannot open {path} ({message}): check the path and its permissions")
    if isinstance(cause, sqlalchemy.exc.OperationalError):
        return ConfigError(f"{shown}: cannot connect ({message}): check the host, port, user, password and "
                           "database name, and that the server runs and accepts connections from here")
    if "does not exist" in message and "relation" in message:
        return ConfigError(f"{shown} holds no Optuna study ({message})")
    return ConfigError(f"{shown}: {type(cause).__name__}: {message}")


def _named(key: str, url: str) -> str:
    """`key=URL` (the URL without its password) as an error names it; the URL alone without a key."""
    return f"{key}={display_url(url)}" if key else display_url(url)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def storage_url(sweep_dir: Path, storage: str | None) -> str:
    """The storage a command reads a sweep's study from: --storage, else the sweep dir's sqlite file (the sweeper's default)."""
    if storage:
        return storage
    db = sweep_dir / "optuna.db"
    if not db.exists():
        raise ConfigError(f"no {db}; give the study's storage with --storage URL")
    return sqlite_url(db)
