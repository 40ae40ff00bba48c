"""Reading run folders that may be anyone's: every file in them is data, and any of it may be bad.

A file that cannot be used (summary.json that is no JSON object or has text or NaN where a number
goes, an empty or column-less metrics.csv, invalid YAML, bytes that are not UTF-8) gets one
warning line naming it, once per collect, and the run is listed with what could be read.
Nothing here raises for what a file holds, and no value read here is run or resolved.
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from runner.config.keys import flatten  # noqa: F401 (read here, and imported from here)
from runner.config.moved import with_current_targets
from runner.record.run_folder import (CONFIG_FILE, HYDRA_DIR, HYDRA_FILE, METRICS_FILE, NEVER_TRAINED, REPLICATE_FOLDER,
                               SUMMARY_FILE, Status)

log = logging.getLogger("runner.collect")

SEARCH_DEPTH = 4  # how deep below a DIR run folders are looked for (outputs/multirun/<date>/<job>)
MAX_KEYS = 100_000  # a config flattened past this many keys is not a run's (YAML aliases can nest exponentially)
NUMBER_FIELDS = ("best_val_acc", "train_s", "val_s", "wall_s", "params_m", "compile_s")
WHOLE_FIELDS = ("best_epoch", "epochs_done", "job_num")
_warned: set[str] = set()

# What a collect writes into its output folder (runner/collect.py); an Optuna study's report writes best.json too.
RESULTS_TXT = "results.txt"
RESULTS_CSV = "results.csv"
BEST_FILE = "best.json"
REPORT_FILE = "report.html"
PARAM_TABLE_FILE = "param_importance.csv"
ACCURACY_PICTURE = "accuracy_by_param.png"
CURVES_PICTURE = "val_acc_curves.png"
FRONT_PICTURE = "pareto_front.png"


def reset_warnings() -> None:
    _warned.clear()


def warn(path: Path | str, problem: str) -> None:
    """One line naming the file and what is wrong with it, once per collect."""
    text = f"{printable(path)}: {printable(problem)}"
    if text not in _warned:
        _warned.add(text)
        log.warning("%s", text)


def printable(value: Any) -> str:
    """`value` as text that any file or terminal takes: a folder name's undecodable bytes as \\xNN,
    control characters (a newline in a name) as escapes."""
    out = []
    for char in str(value):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF or unicodedata.category(char) == "Cc":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def is_run_dir(path: Path) -> bool:
    """A run's folder, or a replicate job's (its replicate_<k>/ folders are its runs, never rows of their own)."""
    return (path / HYDRA_DIR).is_dir() or (path / SUMMARY_FILE).exists() or (path / REPLICATE_FOLDER.format(0)).is_dir()


def find_runs(folder: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Run folders at or below `folder`: a sweep's jobs in launch order (job number), other
    folders by name (dated folders sort by date); a run folder's own subfolders are not searched."""
    if is_run_dir(folder) and not (folder / "multirun.yaml").exists():
        return [folder]
    if depth <= 0:
        return []
    try:
        children = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_launch_order)
    except OSError as e:  # unreadable: someone else's folder
        warn(folder, f"not readable ({e.strerror}); left out")
        return []
    return [run for child in children for run in find_runs(child, depth - 1)]


def job_name(run: Path) -> int | str:
    """A sweep job's number (its folder's name, ASCII digits), else the folder's name."""
    return int(run.name) if run.name.isascii() and run.name.isdigit() else run.name


def _launch_order(path: Path) -> tuple:
    job = job_name(path)
    return (0, job, "") if isinstance(job, int) else (1, 0, printable(job))


def read_yaml(path: Path) -> tuple[bool, Any]:
    """(True, content) or, with a warning, (False, None)."""
    try:
        return True, yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as e:  # invalid YAML, not UTF-8, unreadable, nested too deep
        warn(path, f"not readable YAML ({_first_line(e)}); the run is listed without it")
        return False, None


def _flat_or_warn(path: Path, tree: Any) -> dict[str, Any] | None:
    if not isinstance(tree, dict):
        warn(path, f"holds a {type(tree).__name__}, not a mapping of config keys; the run is listed without it")
        return None
    try:
        return flatten(tree, limit=MAX_KEYS)
    except (ValueError, RecursionError) as e:
        warn(path, f"not a run's config ({_first_line(e)}); the run is listed without it")
        return None


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config, flattened; falls back to Hydra's copy if the run died before writing it."""
    resolved = run_dir / CONFIG_FILE
    if resolved.exists():
        ok, tree = read_yaml(resolved)
        tree = with_current_targets(tree)  # an older run's moved classes, as named now
        flat = _flat_or_warn(resolved, tree) if ok and tree is not None else None
        if flat is not None or tree is None and ok:
            return flat or {}
    hydra_copy = run_dir / HYDRA_DIR / CONFIG_FILE
    if hydra_copy.exists():
        tree = with_current_targets(hydra_config(hydra_copy))
        flat = _flat_or_warn(hydra_copy, tree) if tree is not None else None
        return flat or {}
    return {}


def hydra_config(path: Path) -> Any:
    """Hydra's unresolved `.hydra/config.yaml` as plain data, interpolations between its own keys
    resolved; one that calls a resolver (`${oc.env:...}` reads the environment) is left as written."""
    from omegaconf import OmegaConf

    try:
        text = path.read_text(encoding="utf-8")
        cfg = OmegaConf.create(yaml.safe_load(text) or {})
        calls_resolver = re.search(r"\$\{[^}]*:", text) is not None
        try:
            return OmegaConf.to_container(cfg, resolve=not calls_resolver)
        except Exception:  # an interpolation that needs the runtime: keep it unresolved
            return OmegaConf.to_container(cfg, resolve=False)
    except Exception as e:
        warn(path, f"not readable YAML ({_first_line(e)}); the run is listed without it")
        return None


def read_choices(run_dir: Path) -> dict[str, str]:
    """Which file of each config group the run used (model=lenet, dataset=digits...)."""
    hydra_yaml = run_dir / HYDRA_DIR / HYDRA_FILE
    if not hydra_yaml.exists():
        return {}
    _, tree = read_yaml(hydra_yaml)
    choices: Any = tree
    for key in ("hydra", "runtime", "choices"):
        choices = choices.get(key) if isinstance(choices, dict) else None
    if not isinstance(choices, dict):
        return {}
    # `group@package` entries are Hydra's bookkeeping for nested defaults, not a choice the user made.
    return {k: str(v) for k, v in choices.items()
            if isinstance(k, str) and "/" not in k and "@" not in k and isinstance(v, (str, int, float))}


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file that must hold an object; None, with a warning, when it does not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except Exception as e:
        warn(path, f"not readable JSON ({_first_line(e)}); the run is listed without it")
        return None
    if not isinstance(data, dict):
        warn(path, f"holds a JSON {type(data).__name__}, not an object; the run is listed without it")
        return None
    return data


def _number(value: Any, whole: bool) -> tuple[bool, Any]:
    """(usable, value): a finite number (a whole one if `whole`) or None."""
    if value is None:
        return True, None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300  # finite, no overflow
    if ok and whole:
        ok = float(value).is_integer() and abs(value) < 2**53
        value = int(value) if ok else value
    return ok, value if ok else None


def checked_summary(path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with every number a finite number and status a word; what is not is left
    empty (status: unreadable), in one warning naming the file."""
    out, problems = dict(summary), []
    status = out.get("status")
    if not isinstance(status, str) or not status.strip():
        problems.append(f"status is {printable(repr(status))[:40]}, not a word (shown as unreadable)")
        out["status"] = "unreadable"
    numbers = [*NUMBER_FIELDS, *(k for k in out if isinstance(k, str) and k.startswith("best_"))]
    for key in dict.fromkeys(numbers + list(WHOLE_FIELDS)):
        if key in out:
            whole = key in WHOLE_FIELDS
            ok, value = _number(out[key], whole)
            if not ok:
                problems.append(f"{key} is {printable(repr(out[key]))[:40]}, not a {'whole ' if whole else ''}number")
            out[key] = value
    if problems:
        warn(path, "; ".join(problems) + "; left empty")
    if out.get("error") is not None and not isinstance(out["error"], str):
        out["error"] = str(out["error"])
    if out["status"] in NEVER_TRAINED:
        out.update({k: None for k in out if isinstance(k, str) and k.startswith("best_")})
    return out


def read_metrics(run_dir: Path) -> pd.DataFrame | None:
    """metrics.csv with a whole-number `epoch` and a numeric `val_acc` column; None (warned) otherwise."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, encoding="utf-8")
    except Exception as e:  # empty, not CSV, not UTF-8
        warn(path, f"not a readable table ({_first_line(e)}); the run's epochs are left out")
        return None
    missing = [c for c in ("epoch", "val_acc") if c not in frame.columns]
    if missing:
        warn(path, f"has no {' or '.join(missing)} column; the run's epochs are left out")
        return None
    epoch = pd.to_numeric(frame["epoch"], errors="coerce")
    if epoch.isna().any() or not ((epoch == epoch.round()) & (epoch.abs() < 2**53)).all():
        warn(path, "its epoch column is not epoch numbers; the run's epochs are left out")
        return None
    frame["epoch"] = epoch.astype("int64")
    for column in ("val_acc", "train_s"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def read_outcome(run_dir: Path) -> dict[str, Any]:
    """summary.json, or what metrics.csv says of a run that has not finished (or was killed hard)."""
    summary_file = run_dir / SUMMARY_FILE
    if summary_file.exists():
        summary = read_json_object(summary_file)
        if summary is not None:
            return checked_summary(summary_file, summary)
        outcome: dict[str, Any] = {"status": "unreadable", "error": f"{SUMMARY_FILE} is not readable"}
    else:
        outcome = {"status": Status.RUNNING}
    frame = read_metrics(run_dir)
    if frame is not None and len(frame):
        acc = frame["val_acc"].replace([math.inf, -math.inf], math.nan).dropna()
        outcome["epochs_done"] = int(frame["epoch"].max())
        if "train_s" in frame.columns:
            outcome["train_s"] = float(frame["train_s"].fillna(0).sum())
        if len(acc):
            best = acc.idxmax()
            outcome.update(best_val_acc=float(acc[best]), best_epoch=int(frame["epoch"][best]))
    return outcome
