"""Check the config a command line asks for before Hydra acts on any of it.

Hydra instantiates the callbacks, the sweeper and the launcher, creates the run folder, opens
the log file and writes `.hydra/` all before it calls the task function, so a check inside
the task function is too late for "nothing ran, no folder". Here the config is composed first,
exactly as Hydra is about to compose it (same search path, `--config-dir`, `--config-path`,
`--config-name`, overrides), and checked: every `_target_` and the logging and sweeper settings
against runner/trust.py, and for a single run the values (runner/config.py check_config).
A refusal is one line and exit 2 before anything exists. Composing costs ~0.1-0.3 s.

For a grid (`-m`, Hydra's basic sweeper) every job's config is composed and checked too.
What is left to the task function's own checks (they refuse the job before anything is built,
and `runner/__main__.py` removes the folder of a refused single run): each Optuna suggestion,
and what only the job knows (a data set's files, a device, a resume checkpoint). An unknown
group option (`model=lenett`, also as one value of a grid) is one line listing the options; any
other config that doesn't compose is left to Hydra, which reports it in its own words.
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
from runner.trust import check_config_trust
from runner.fused.launcher import check_fuse_option
from runner.locks import RUN_LOCK_NAME

HYDRA_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
MAX_CHECKED_JOBS = 500  # composing a job's config takes ~20-50 ms; beyond this, each job checks itself


def preflight(argv: list[str], task_function: Callable, config_path: str, config_name: str) -> None:
    """Refuse (print one line, exit 2) a command line whose config runner/trust.py does not allow."""
    try:
        cfg, multirun, grid_jobs = _compose(argv, task_function, config_path, config_name)
        if cfg is None:
            return
        for job_cfg in [cfg, *grid_jobs]:
            check_config_trust(job_cfg)
        check_fuse_option(cfg.hydra.launcher)  # hydra/launcher=fused's one option
        shown_only = any(arg in ("--cfg", "-c") or arg.startswith("--cfg=") for arg in argv)
        if not multirun and not shown_only:  # a grid's bad combination is its job's failure, not the sweep's
            _check_values(cfg)
            if cfg.get("resume"):  # before Hydra writes into a folder the checkpoint may live in
                from runner.resume import check_resume_command

                check_resume_command(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as e:  # a config the check can't read is not run on trust
        print(f"error: the config could not be checked ({type(e).__name__}: {str(e).strip().splitlines()[0]}); "
              f"fix that key", file=sys.stderr)
        sys.exit(2)


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
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if cfg.hydra.sweeper.get("_target_") != HYDRA_BASIC_SWEEPER:
        return []
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    arguments = OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(params + arguments)
    return BasicSweeper.split_arguments(parsed, None)[0]


def _check_values(cfg: DictConfig) -> None:
    """check_config on the job's config (no `hydra` node, as the task function gets it)."""
    from runner.config import check_config

    job_cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        check_config(job_cfg)
    except ConfigError:
        raise
    except Exception:  # a value that can't even be read (another primary config): the job reports it
        return


def _compose(argv: list[str], task_function: Callable, config_path: str, config_name: str):
    """(composed config with its `hydra` node, multirun?, each grid job's config), or (None, False, [])
    where Hydra should speak instead (help, a config that doesn't compose)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (create_automatic_config_search_path,
                                       detect_calling_file_or_module_from_task_function, detect_task_name,
                                       get_args_parser)
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.types import RunMode

    try:
        args = get_args_parser().parse_intermixed_args(argv)
    except SystemExit:  # a malformed command line: Hydra prints its usage
        return None, False, []
    if args.help or args.hydra_help or args.shell_completion or args.info or args.experimental_rerun:
        return None, False, []
    import os

    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module,
                                                      args.config_path or config_path)
    if args.config_dir is not None:
        if not os.path.isdir(args.config_dir):
            return None, False, []
        search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(args.config_dir)}",
                            anchor=SearchPathQuery(provider="schema"))
    try:
        hydra = Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                         config_search_path=search_path)
        name = args.config_name or config_name
        overrides = list(args.overrides)
        parsed = hydra.config_loader.parse_overrides(name, overrides)
        mode = hydra.get_mode(config_name=name, overrides=overrides, parsed_overrides=parsed)
        multirun = bool(args.multirun) or mode == RunMode.MULTIRUN
        cfg = hydra.compose_config(config_name=name, overrides=overrides, parsed_overrides=parsed,
                                   run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
                                   with_log_configuration=False)
        # A grid's jobs are known now: compose each one's config to check it too.
        jobs = [hydra.config_loader.load_sweep_config(cfg, job)
                for job in (_grid_jobs(hydra, cfg)[:MAX_CHECKED_JOBS] if multirun else [])]
        return cfg, multirun, jobs
    except MissingConfigException as e:  # an unknown group option (model=lenett), in a grid's jobs too
        raise ConfigError(_missing_option(str(e))) from None
    except (HydraException, OmegaConfBaseException):  # doesn't compose: Hydra reports it in its own words
        return None, False, []
    finally:
        GlobalHydra.instance().clear()


# What Hydra and RunFolder put in a run folder before the first epoch ends.
SETUP_FILES = (".hydra", "tensorboard", "summary.json", "metrics.csv", "curves.png", "config.yaml", RUN_LOCK_NAME)


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
