"""The command that trains a run again, for best.json and report.html.

The command is the run's own command-line overrides, as the run recorded them in its
summary.json when it started training (runner/sweep/job_records.py's `launched_as`), not Hydra's
`.hydra/overrides.yaml`: a later job sent to the same folder (a changed grid re-run into the
sweep dir, a fixed hydra.sweep.subdir) rewrites that file, and is refused. A folder from before
such records uses `.hydra/overrides.yaml` only while Hydra's copy of the config there agrees with
the run's own config.yaml; otherwise best.json has no command and says why (command_note).
`hparams_search=...` / `experiment=...` stay in it, because such a file may set run keys as well
as the search; without `-m` the search settings are ignored and one run trains. `resume=` and
`rerun=` are left out: a resumed run equals an uninterrupted one (tested in tests/test_train.py),
so a run resumed from another's checkpoint repeats as that run's overrides with its own on top.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from runner.record.run_folder import CONFIG_FILE, HYDRA_DIR, HYDRA_FILE, OVERRIDES_FILE, SUMMARY_FILE
from runner.results.read import printable, read_json_object, read_yaml

log = logging.getLogger("runner.collect")

# Overrides that say how a run was started, not what it trains.
NOT_REPEATED = ("resume", "rerun")


RESUME_DEPTH = 8  # a chain of runs each resumed from the one before



def read_overrides(run_dir: str | Path) -> list[str]:
    """Hydra's `.hydra/overrides.yaml`: the overrides of the last job sent to the folder."""
    path = Path(run_dir) / HYDRA_DIR / OVERRIDES_FILE
    if not path.exists():
        return []
    ok, overrides = read_yaml(path)
    return [str(o) for o in overrides] if ok and isinstance(overrides, list) else []



def _key(override: str) -> str:
    return override.lstrip("+~").split("=")[0]



def recorded_overrides(run_dir: Path, depth: int = 0) -> tuple[list[str] | None, str | None]:
    """(the overrides that train the run again, a note) from what the run recorded; (None, why) when unknown."""
    summary = read_json_object(run_dir / SUMMARY_FILE) if (run_dir / SUMMARY_FILE).is_file() else None
    own = (summary or {}).get("overrides")
    if isinstance(own, list) and all(isinstance(o, str) for o in own):
        overrides = list(own)
    else:
        stale = _hydra_copy_differs(run_dir)
        if stale:
            return None, (f"{printable(run_dir)}/.hydra/overrides.yaml is a later job's (its config differs from the "
                          f"run's config.yaml at {stale}) and the run recorded no overrides of its own")
        overrides = read_overrides(run_dir)
    resumed = [o.split("=", 1)[1] for o in overrides if _key(o) == "resume" and "=" in o]
    kept = [o for o in overrides if _key(o) not in NOT_REPEATED]
    if not resumed or resumed[-1] in ("", "null", "None"):
        return kept, None
    origin = Path(resumed[-1]).parent
    base, _ = recorded_overrides(origin, depth + 1) if depth < RESUME_DEPTH and origin.is_dir() else (None, None)
    if base is None:
        return kept, (f"resumed from {printable(resumed[-1])}, whose run's overrides are unknown: "
                      "add the original run's overrides to the command")
    mine = {_key(o): o for o in kept}
    merged = [mine.pop(_key(o), o) for o in base]
    return merged + list(mine.values()), None



def _hydra_copy_differs(run_dir: Path) -> str | None:
    """The first key where `.hydra/config.yaml` (Hydra's, of the last job sent here) differs from
    the run's own config.yaml, ignoring keys that never change a result; None if they agree or either is missing."""
    from runner.results.read import MAX_KEYS, flatten, hydra_config
    from runner.config.keys import result_neutral

    own_path, hydra_path = run_dir / CONFIG_FILE, run_dir / HYDRA_DIR / CONFIG_FILE
    if not own_path.is_file() or not hydra_path.is_file():
        return None
    ok, own = read_yaml(own_path)
    hydra = hydra_config(hydra_path)
    if not ok or not isinstance(own, dict) or not isinstance(hydra, dict):
        return None
    try:
        own_flat, hydra_flat = flatten(own, limit=MAX_KEYS), flatten(hydra, limit=MAX_KEYS)
    except (ValueError, RecursionError):
        return None
    for key in sorted(set(own_flat) | set(hydra_flat)):
        if result_neutral(key) or key == "dataset.num_classes":
            continue
        mine, theirs = own_flat.get(key), hydra_flat.get(key)
        if isinstance(theirs, str) and "${" in theirs:  # left unresolved: nothing to compare
            continue
        if mine != theirs:
            return key
    return None



def repeat_record(run_dir: str | Path) -> dict[str, Any]:
    """The run's overrides and the `python -m runner ...` command that repeats it."""
    overrides, note = recorded_overrides(Path(run_dir))
    command = None if overrides is None else " ".join(["python -m runner", *map(shlex.quote, overrides)])
    record: dict[str, Any] = {"best_overrides": overrides, "command": command}
    notes = [n for n in (note, _parallel_note(Path(run_dir))) if n]
    if notes:
        record["command_note"] = "; ".join(notes)
    return record



def _parallel_note(run_dir: Path) -> str | None:
    """A trial run beside others with compute.threads=auto used fewer threads than a lone run
    will, and a different thread count changes floating-point summation order."""
    hydra_yaml = run_dir / HYDRA_DIR / HYDRA_FILE
    config = run_dir / CONFIG_FILE
    if not hydra_yaml.exists() or not config.exists():
        return None
    hydra, cfg = read_yaml(hydra_yaml)[1], read_yaml(config)[1]
    launcher = (hydra.get("hydra") if isinstance(hydra, dict) else None) or {}
    launcher = (launcher.get("launcher") if isinstance(launcher, dict) else None) or {}
    compute = (cfg.get("compute") if isinstance(cfg, dict) else None) or {}
    if not isinstance(launcher, dict) or not isinstance(compute, dict):
        return None
    n_jobs = launcher.get("n_jobs")
    threads = compute.get("threads")
    if "joblib" in str(launcher.get("_target_", "")) and n_jobs not in (None, 1) and str(threads) == "auto":
        return (f"ran as one of {n_jobs} parallel trials with compute.threads=auto (the cores shared among them); "
                "add compute.threads=<cores/n_jobs> to repeat its arithmetic exactly")
    return None

