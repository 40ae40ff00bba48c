"""The one exception type that means "the user asked for something we can't do", and the boundary
every command's main runs inside, so that any failure ends as one line on stderr."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Iterator


class ConfigError(ValueError):
    """Bad input: the message is one line naming the key, the value and the fix.

    The entry points print it without a traceback and exit non-zero.
    """


# What to do about an operating-system error writing or reading a path, by errno.
OS_FIXES = {
    errno.ENOSPC: "the disk is full: free some space there or write the outputs elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space there or write the outputs elsewhere",
    errno.EACCES: "no permission there: choose a folder you can write to",
    errno.EPERM: "no permission there: choose a folder you can write to",
    errno.EROFS: "the file system is read-only: choose a folder on a writable disk",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another folder",
    errno.EISDIR: "it is a folder, where a file is expected: give a file's path",
    errno.ENOENT: "it does not exist: check the path",
    errno.EEXIST: "something is already there where a folder or file would be made: choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}


def os_error_line(error: OSError) -> str:
    """One line naming the path (when the error has one), what went wrong and the fix."""
    where = error.filename if error.filename is not None else None
    reason = error.strerror or type(error).__name__
    fix = OS_FIXES.get(error.errno or 0, "check the path and the disk")
    return f"{where}: {reason}; {fix}" if where is not None else f"{reason}; {fix}"


def _user_input_error(error: Exception) -> str | None:
    """A config file or override Hydra/OmegaConf/YAML could not read, as one line; None for anything else.

    Looked up only when those libraries are already loaded: a command that never imports them
    can't raise their errors.
    """
    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(error, yaml.YAMLError):
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
        where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
        return f"{where} is not valid YAML ({problem}); fix the file"
    bases = tuple(cls for module, name in (("hydra.errors", "HydraException"),
                                           ("omegaconf.errors", "OmegaConfBaseException"))
                  if module in sys.modules for cls in [getattr(sys.modules[module], name)])
    if bases and isinstance(error, bases):
        lines = [line.strip() for line in str(error).splitlines()
                 if line.strip() and not line.strip().startswith(("object_type=", "reference_type="))]
        cause = error.__cause__
        if cause is not None and str(cause).strip() and str(cause).strip().splitlines()[0] not in lines:
            lines.append(str(cause).strip().splitlines()[0])
        return "; ".join(lines) or type(error).__name__
    return None


def _os_cause(error: BaseException) -> OSError | None:
    """`error`, or the exception it was raised from or while handling, that is an OSError with a known cause."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in OS_FIXES:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def os_failure(error: BaseException, where: Path | str | None = None) -> OSError | None:
    """The operating-system failure behind `error` (disk full, no permission...), its path filled in
    from `where` when it has none; None when `error` is something else."""
    cause = _os_cause(error)
    if cause is not None:
        return OSError(cause.errno, cause.strerror, str(where)) if cause.filename is None and where else cause
    if where is not None and _disk_full(where):  # e.g. torch.save's "unexpected pos" on a full disk
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
    return None


def _disk_full(path: Path | str) -> bool:
    """The disk holding `path` (or its nearest existing parent) has under 1 MiB free."""
    import shutil

    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free < 1 << 20
    except OSError:
        return False


def write_traceback(error: BaseException, log_file: Path | str | None = None) -> str | None:
    """Append `error`'s full traceback to `log_file` (a temp file when None); return where, or None."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        if log_file is not None:
            with open(log_file, "a", encoding="utf-8") as f:
                f.write(text)
            return str(log_file)
    except OSError:
        pass  # e.g. the disk the run folder is on is full: try the temp folder
    try:
        fd, path = tempfile.mkstemp(prefix="sweep-runner-", suffix=".traceback.txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    except OSError:
        return None


def unexpected_error_line(error: BaseException, log_file: Path | str | None = None) -> str:
    """`<Type>: <message> (full traceback in <file>)`, after writing the traceback there."""
    where = write_traceback(error, log_file)
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    head = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return f"{head} (full traceback in {where})" if where else f"{head} (no traceback file could be written)"


def error_line(error: Exception, log_file: Path | str | None = None, where: Path | str | None = None) -> tuple[str, int]:
    """The one line (without `error: `) and the exit status for a failure that ends a command.

    ConfigError and unreadable config files: 2. An operating-system error with a known cause
    (disk full, a folder that can't be written): 1, naming its path, or `where` when it has
    none. Anything else: 1, with its full traceback written to `log_file` or a temp file.
    """
    if isinstance(error, ConfigError):
        return str(error), 2
    failure = os_failure(error, where)
    if failure is not None:
        return os_error_line(failure), 1
    line = _user_input_error(error)
    if line is not None:
        return line, 2
    return unexpected_error_line(error, log_file), 1


@contextlib.contextmanager
def entry_point(log_file: Path | str | None = None, where: str | None = None) -> Iterator[None]:
    """Run a command's main inside this: whatever escapes it ends as one `error:` line on stderr
    (see error_line; `where` names the output for an OS error that has no path). KeyboardInterrupt and SystemExit pass through: runner/run/interrupts.py turns
    an interrupt into its own line."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 (the boundary: nothing may leave as a traceback)
        line, status = error_line(e, log_file, where)
        print(f"error: {line}", file=sys.stderr)
        sys.exit(status)
