"""Check the config a command line asks for before Hydra acts on any of it.

Hydra instantiates the callbacks, the sweeper and the launcher, creates the run folder, opens
the log file and writes `.hydra/` all before it calls the task function, so a check inside
the task function is too late for "nothing ran, no folder". Here the config is composed first,
exactly as Hydra is about to compose it (same search path, `--config-dir`, `--config-path`,
`--config-name`, overrides, and for `--experimental-rerun DIR` the overrides saved in DIR), through
the same checked loader every job passes (runner/trust/job_boundary.py; runner/__main__.py installs it), so a refusal is one line and
exit 2 before anything exists. What it checks, besides the command's own config:

* every job of a grid (Hydra's basic sweeper), and that no two jobs share one folder;
* every value a search space (`hydra.sweeper.params`) gives a `hydra.*` key, exactly as if typed;
* settings that put commands into a cluster job's script, or choose where a Ray sweep's jobs run
  (runner/trust/targets.py COMMAND_LINE_ONLY, COMMAND_LINE_ONLY_NODES): only an override typed on this
  command line may set them, never a config file or a rerun folder;
* for a single run, the values (runner/config/schema.py check_config); for a sweep, its objectives and an
  Optuna search's directions for them (runner/results/pareto.py check_sweep_objectives).

What only the job knows (a data set's files, a device, a resume checkpoint, an Optuna suggestion
for a run key) is checked by the job itself before anything is built. An unknown group option
(`model=lenett`, also as one value of a grid) is one line listing the options; any other config
that doesn't compose is left to Hydra, which reports it in its own words.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.errors import ConfigError
from runner.config.schema import check_hydra_settings
from runner.fused.launcher import check_fuse_option
from runner.record.run_folder import CONFIG_FILE, CURVES_FILE, HYDRA_DIR, METRICS_FILE, SUMMARY_FILE, TENSORBOARD_DIR
from runner.results.pareto import check_sweep_objectives
from runner.sweep.locks import RUN_LOCK_NAME
from runner.sweep.ray_launcher import check_installed as check_ray_installed
from runner.trust.job_boundary import refusal
from runner.trust.targets import check_command_line_only

HYDRA_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# A sweep's jobs need folders of their own: its subdir must name something that differs per job.
PER_JOB_SUBDIR = ("hydra.job.num", "hydra.job.id", "hydra.job.override_dirname")


def preflight(argv: list[str], task_function: Callable, config_path: str, config_name: str) -> None:
    """Refuse (print one line, exit 2) a command line whose config runner/trust/targets.py does not allow."""
    try:
        composed = _compose(argv, task_function, config_path, config_name)
        if composed is None:
            return
        cfg, multirun, typed_keys = composed
        check_command_line_only(cfg, typed_keys)
        check_fuse_option(cfg.hydra.launcher)  # hydra/launcher=fused's one option
        check_ray_installed(cfg.hydra.launcher)  # hydra/launcher=runner_ray without its plugin
        check_hydra_settings(cfg.hydra)  # logging values, n_jobs: Hydra acts on them before the job starts
        if multirun:
            _check_one_folder_per_job(cfg)
            check_sweep_objectives(cfg)  # objectives, and Optuna's directions for them (runner/results/pareto.py)
        shown_only = any(arg in ("--cfg", "-c") or arg.startswith("--cfg=") for arg in argv)
        if not multirun and not shown_only:  # a grid's bad combination is its job's failure, not the sweep's
            _check_values(cfg)
            if cfg.get("resume"):  # before Hydra writes into a folder the checkpoint may live in
                from runner.run.resume import check_resume_command

                check_resume_command(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as e:  # a config the check can't read is not run on trust
        print(f"error: the config could not be checked ({type(e).__name__}: {str(e).strip().splitlines()[0]}); "
              f"fix that key", file=sys.stderr)
        sys.exit(2)


def _check_one_folder_per_job(cfg: DictConfig) -> None:
    subdir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir")
    if not any(name in str(subdir) for name in PER_JOB_SUBDIR):
        raise ConfigError(f"hydra.sweep.subdir={subdir} gives every job of the sweep the same folder; "
                          f"include ${{hydra.job.num}} (the default) so each job has its own")


def _check_sweep_jobs(loader, cfg: DictConfig, jobs: list[list[str]]) -> None:
    """Compose each job's config through the checked loader, as the launcher will; refuse the first bad one.

    Jobs that differ only in values nothing checked can see (`seed=range(0,1000)`: no `hydra.*` setting
    and no `_target_` refers to `seed`) are composed once: composing is what the check's time goes to.
    """
    seen = set()
    inert = _inert_keys(cfg)
    for job in jobs:
        relevant = tuple(o for o in job if o.split("=", 1)[0] not in inert)
        if relevant in seen:
            continue
        seen.add(relevant)
        reason = refusal(loader.load_sweep_config(cfg, list(job)))
        if reason:
            raise ConfigError(f"{reason} (in the sweep's job {' '.join(job)})")


def _inert_keys(cfg: DictConfig) -> set[str]:
    """Top-level value keys (`seed`, `lr`) that no `hydra.*` setting and no `_target_` refers to, even
    through other interpolations: a job's value for them cannot change what runner/trust/targets.py checks."""
    import re

    raw = OmegaConf.to_container(cfg, resolve=False)
    strings = {path: value for path, value in _flat_strings(raw, "") if "${" in value}
    watched = [v for path, v in strings.items() if path.startswith("hydra.") or path.endswith("_target_")]
    names: set[str] = set()
    while watched:  # follow interpolations to what they refer to, and on
        for token in re.findall(r"[\w.]+", " ".join(re.findall(r"\$\{([^}]*)\}", watched.pop()))):
            if token not in names:
                names.add(token)
                watched += [v for path, v in strings.items() if path == token or path.endswith(f".{token}")]
    referred = names | {name.rsplit(".", 1)[-1] for name in names}
    return {key for key, value in raw.items()
            if key != "hydra" and not isinstance(value, (dict, list)) and key not in referred}


def _flat_strings(node, path: str):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flat_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _flat_strings(value, f"{path}.{i}")
    elif isinstance(node, str):
        yield path, node


def _search_space_jobs(hydra, cfg: DictConfig) -> list[list[str]]:
    """One override per value each `hydra.*` key of an Optuna search space can take."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if cfg.hydra.sweeper.get("_target_") == HYDRA_BASIC_SWEEPER:
        return []
    params = cfg.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create(config_loader=hydra.config_loader)
    arguments = OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)  # every trial's, as launched
    jobs = []
    for key, value in params.items():
        if not str(key).lstrip("+~").startswith("hydra."):
            continue
        override = parser.parse_override(f"{key}={value}")
        if not override.is_sweep_override():
            jobs.append([*arguments, f"{key}={value}"])
        elif override.is_interval_sweep():
            raise ConfigError(f"hydra.sweeper.params.{key}={value} is not allowed: a search space may give a "
                              f"hydra.* key only listed values, choice(...) or range(...)")
        else:
            jobs += [[*arguments, f"{key}={v}"] for v in override.sweep_string_iterator()]
    return jobs


def _missing_option(message: str) -> str:
    """Hydra's several-line "Could not find 'model/lenett' ... Available options in 'model': ..." as one line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    options, listing = [], False
    for line in lines[1:]:
        if line.startswith("Config search path"):
            break
        if line.startswith("Available options"):
            listing = True
        elif listing:
            options.append(line)
    head = lines[0].replace("In 'config': ", "") if lines else "a config option could not be found"
    return f"{head}; pick one of: {', '.join(options)}" if options else f"{head}; check the name"


def _grid_jobs(hydra, cfg) -> list[list[str]]:
    """The override lists of a BasicSweeper grid, as it will expand them (none for other sweepers:
    an Optuna study's trials are checked by each job's own start-up)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from runner.hydra_adapter import grid_jobs

    if cfg.hydra.sweeper.get("_target_") != HYDRA_BASIC_SWEEPER:
        return []
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    arguments = OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(params + arguments)
    return grid_jobs(parsed)


def _check_values(cfg: DictConfig) -> None:
    """check_config on the job's config (no `hydra` node, as the task function gets it)."""
    from runner.config.schema import check_config

    job_cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        check_config(job_cfg)
    except ConfigError:
        raise
    except Exception:  # a value that can't even be read (another primary config): the job reports it
        return


def _compose(argv: list[str], task_function: Callable, config_path: str, config_name: str):
    """(composed config with its `hydra` node, multirun?, the keys of the overrides typed on the
    command line), after checking every job's config; None where Hydra should speak instead
    (help, a config that doesn't compose)."""
    import os

    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from runner.hydra_adapter import args_parser, main_hydra

    try:
        args = args_parser().parse_intermixed_args(argv)
    except SystemExit:  # a malformed command line: Hydra prints its usage
        return None
    if args.help or args.hydra_help or args.shell_completion or args.info:
        return None
    saved, name = [], args.config_name or config_name
    if args.experimental_rerun is not None:
        if args.multirun or args.config_name is not None:
            raise ConfigError("--experimental-rerun DIR reruns one job: drop -m/--multirun and --config-name")
        saved_name, saved = _rerun_overrides(args.experimental_rerun)
        name = saved_name or name
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        return None
    try:
        hydra = main_hydra(task_function, args.config_path or config_path, args.config_dir)
        overrides = saved + list(args.overrides)
        parsed = hydra.config_loader.parse_overrides(name, overrides)
        typed_keys = [o.key_or_group for o in parsed[len(saved):]]
        typed_keys += ["hydra.run.dir"] if saved else []  # the rerun's folder, from the DIR typed
        mode = RunMode.RUN if saved else hydra.get_mode(config_name=name, overrides=overrides,
                                                          parsed_overrides=parsed)
        multirun = bool(args.multirun) or mode == RunMode.MULTIRUN
        cfg = hydra.compose_config(config_name=name, overrides=overrides, parsed_overrides=parsed,
                                   run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
                                   with_log_configuration=False)
        if multirun:  # every job Hydra is about to run, and every hydra.* value a search space can give
            _check_sweep_jobs(hydra.config_loader, cfg, _grid_jobs(hydra, cfg) + _search_space_jobs(hydra, cfg))
        return cfg, multirun, typed_keys
    except ConfigError:  # refused by the checked loader (a HydraException too): as it is
        raise
    except MissingConfigException as e:  # an unknown group option (model=lenett), in a grid's jobs too
        raise ConfigError(_missing_option(str(e))) from None
    except (HydraException, OmegaConfBaseException):  # doesn't compose: Hydra reports it in its own words
        return None
    finally:
        GlobalHydra.instance().clear()


def _rerun_overrides(run_dir: str) -> tuple[str | None, list[str]]:
    """The overrides Hydra's `--experimental-rerun DIR` will apply: read from DIR/.hydra, so data, checked."""
    from runner.hydra_adapter import rerun_overrides

    try:
        return rerun_overrides(run_dir)
    except Exception as e:  # missing or unreadable .hydra files
        raise ConfigError(f"--experimental-rerun {run_dir}: its .hydra/hydra.yaml and .hydra/overrides.yaml "
                          f"could not be read ({type(e).__name__}); give a run folder Hydra wrote") from None


# What Hydra and RunFolder put in a run folder before the first epoch ends.
SETUP_FILES = (HYDRA_DIR, TENSORBOARD_DIR, SUMMARY_FILE, METRICS_FILE, CURVES_FILE, CONFIG_FILE, RUN_LOCK_NAME)


def remove_refused_run_folder(run_dir: Path, job_name: str) -> None:
    """A single run refused before training leaves no folder: remove what set-up wrote, and the folder.

    Only a folder holding nothing but those names: `hydra.run.dir` may point at a folder of the
    user's (even the working directory), whose own files, or same-named ones, must stay.
    """
    import shutil

    run_dir = Path(run_dir)
    ours = {*SETUP_FILES, f"{job_name}.log"}
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= ours:
        return
    logging.shutdown()  # close the run's log file before removing it
    shutil.rmtree(run_dir, ignore_errors=True)
