"""The typed schema of a run's top-level keys, and the start-up checks Hydra's types can't express.

Hydra validates types and unknown keys against `RunConfig` while composing (``batch_size=abc``
or ``lrr=0.1`` fail there, before anything runs); `check_config` then rejects values that have
the right type but make no sense, each with one line naming the key, the value and the fix:
values that don't resolve, `_partial_`/`_args_` in a run group, compute and data set sizes.
`check_hydra_settings` (logging values, n_jobs) and `check_command_line` (Hydra's flags) run
before Hydra acts, from `python -m runner`'s start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from common.errors import ConfigError
from runner.config.objective import check_objective


@dataclass
class RunConfig:
    batch_size: int = 32
    lr: float = 0.001
    epochs: int = 10
    seed: Optional[int] = 0
    replicates: int = 1  # copies of the run differing only in seed (runner/sweep/replicates.py)
    device: str = "auto"
    resume: Optional[str] = None
    num_workers: int = 0
    tensorboard: bool = True
    progress: str = "auto"
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None
    objective: Any = "val_acc"  # one name, or a list of several (runner/config/objective.py)
    rerun: bool = False
    compute: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    augmentation: Any = MISSING
    dataset: Any = MISSING
    adversary: Any = None
    logger: Any = None  # conf/logger/: trackers (runner/record/trackers.py)


ConfigStore.instance().store(name="run_schema", node=RunConfig)


def __getattr__(name: str) -> tuple[str, ...]:
    """`TRUSTED_TARGETS`: Hydra's execution whitelist for a run's groups, the exact classes of
    runner/trust/targets.py RUN_TARGETS (built on first use: it imports them to add canonical names)."""
    if name == "TRUSTED_TARGETS":
        from runner.trust.allowed import RUN_TARGETS
        from runner.trust.targets import flat, hydra_whitelist

        return hydra_whitelist(flat(RUN_TARGETS))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SWITCH_VALUES = ("auto", "true", "false")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def switch(value: object) -> str:
    """An auto|true|false setting as one lower-case word: YAML reads `true` as a bool, and a
    command-line override may arrive as the string "True"."""
    return str(value).lower()


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that can't work."""
    check_resolvable(cfg)
    check_instantiate_keys(cfg)
    checks = [
        (cfg.lr > 0, "lr", cfg.lr, "use a positive learning rate, e.g. lr=0.01"),
        (cfg.batch_size >= 1, "batch_size", cfg.batch_size, "use batch_size=1 or more"),
        (cfg.epochs >= 1, "epochs", cfg.epochs, "use epochs=1 or more"),
        (cfg.num_workers >= 0, "num_workers", cfg.num_workers, "use num_workers=0 or more"),
        (bool(DEVICE_PATTERN.match(str(cfg.device))), "device", cfg.device, "use device=auto, cpu or cuda"),
        (switch(cfg.progress) in SWITCH_VALUES, "progress", cfg.progress, "use progress=auto, true or false"),
        (switch(cfg.compute.amp) in SWITCH_VALUES, "compute.amp", cfg.compute.amp, "use auto, true or false"),
        (switch(cfg.compute.data_on_device) in SWITCH_VALUES, "compute.data_on_device", cfg.compute.data_on_device,
         "use auto, true or false"),
        (switch(cfg.compute.get("cuda_graph", "auto")) in SWITCH_VALUES, "compute.cuda_graph",
         cfg.compute.get("cuda_graph"), "use auto, true or false"),
        (0.0 <= cfg.label_smoothing < 1.0, "label_smoothing", cfg.label_smoothing, "use a value in [0, 1), e.g. 0.1"),
        (cfg.grad_clip is None or cfg.grad_clip > 0, "grad_clip", cfg.grad_clip, "use a positive norm or grad_clip=null"),
        (cfg.seed is None or cfg.seed >= 0, "seed", cfg.seed, "use a seed of 0 or more, or seed=null"),
    ]
    replicates = cfg.get("replicates", 1)
    checks.append((_positive_int(replicates), "replicates", replicates,
                   "use replicates=1 or more (copies of the run with seeds seed, seed+1, ...)"))
    checks.append((replicates == 1 or cfg.seed is not None, "seed", "null",
                   f"replicates={replicates} trains seeds seed, seed+1, ...: give a seed, e.g. seed=0"))
    checks += _compute_and_size_checks(cfg)
    for ok, key, value, fix in checks:
        if not ok:
            raise ConfigError(f"{key}={value} is invalid: {fix}")
    check_objective(cfg.get("objective", "val_acc"), bool((cfg.get("adversary") or {}).get("_target_")))
    for group in ("model", "optimizer", "scheduler", "augmentation", "dataset"):
        if "_target_" not in cfg[group]:
            raise ConfigError(f"{group} has no _target_; pick a file from conf/{group}/, e.g. {group}=<name>")


# Hydra's keys that make `instantiate` do more than call the class with keyword options.
INSTANTIATE_KEYS = ("_partial_", "_args_", "_recursive_", "_convert_")
PARTIAL_GROUPS = ("optimizer", "scheduler")  # built as partials: the runner passes the parameters/optimizer
RUN_GROUPS = ("model", "dataset", "optimizer", "scheduler", "augmentation", "adversary")


def check_instantiate_keys(cfg: DictConfig) -> None:
    """A run group is built by calling its class with keyword options, nothing else: `_args_`,
    `_recursive_`, `_convert_` and `_partial_` are refused at any depth, except `_partial_: true`
    in optimizer and scheduler (and a scheduler nested there, like warmup's `after`), which the
    runner completes with the parameters or the optimizer."""
    for group in RUN_GROUPS:
        for path, key, value in _special_keys(cfg.get(group), group):
            if key == "_partial_" and group in PARTIAL_GROUPS and value is True:
                continue
            value = str(value).lower() if isinstance(value, bool) else value  # as typed: true, not True
            if key == "_partial_" and group in PARTIAL_GROUPS:
                raise ConfigError(f"{path}._partial_={value} is not allowed: the runner passes the "
                                  f"{'parameters' if group == 'optimizer' else 'optimizer'} itself; remove the override")
            raise ConfigError(f"{path}.{key}={value} is not allowed: a {group} is built by calling its class "
                              f"with keyword options; remove {key} and set the options by name")


def _special_keys(node: object, path: str):
    """(path of the node, key, raw value) for each of INSTANTIATE_KEYS in `node`, at any depth."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            child = node._get_node(key)  # noqa: SLF001 (unresolved: an interpolation is reported as written)
            if key in INSTANTIATE_KEYS:
                yield path, key, child._value() if child is not None else None  # noqa: SLF001
            elif isinstance(child, (DictConfig, ListConfig)):
                yield from _special_keys(child, f"{path}.{key}")
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _special_keys(node._get_node(i), f"{path}[{i}]")  # noqa: SLF001


def check_resolvable(cfg: DictConfig, path: str = "") -> None:
    """Every value reads: an interpolation that can't resolve (`${oc.env:UNSET}`) or a required
    value left `???` is one line naming the key, not a traceback when the run first reads it.
    A `${hydra:...}` is left to the job, where Hydra's own settings are known."""
    keys = range(len(cfg)) if isinstance(cfg, ListConfig) else [k for k in cfg.keys() if not (k == "hydra" and not path)]
    for key in keys:
        where = f"{path}[{key}]" if isinstance(cfg, ListConfig) else f"{path}.{key}" if path else str(key)
        raw = cfg._get_node(key)  # noqa: SLF001
        written = raw._value() if raw is not None and not isinstance(raw, (DictConfig, ListConfig)) else None  # noqa: SLF001
        try:
            value = cfg[key]
        except MissingMandatoryValue:
            raise ConfigError(f"{where} is not set (??? in its config file): pass {where}=<value>") from None
        except OmegaConfBaseException as e:
            if "${hydra:" in str(written):
                continue
            reason = str(e).strip().splitlines()[0].replace("KeyError raised while resolving interpolation: ", "")
            raise ConfigError(f"{where}={written} cannot be resolved ({reason.strip(chr(34))}): set what it refers "
                              f"to, or give the value itself") from None
        if isinstance(value, (DictConfig, ListConfig)):
            check_resolvable(value, where)


def _compute_and_size_checks(cfg: DictConfig) -> list[tuple[bool, str, object, str]]:
    """compute.* settings and the data set's sizes: typed `Any` in the schema, so checked here."""
    compute, dataset = cfg.compute, cfg.dataset
    threads = compute.get("threads", "auto")
    checks = [(str(threads) == "auto" or _positive_int(threads), "compute.threads", threads,
               "use compute.threads=auto or a number of threads, 1 or more")]
    per_gpu = compute.get("trials_per_gpu", 1)
    checks.append((_positive_int(per_gpu), "compute.trials_per_gpu", per_gpu,
                   "use how many trials of a parallel sweep may share one GPU, 1 or more, e.g. compute.trials_per_gpu=2"))
    for key in ("channels_last", "compile", "cudnn_benchmark"):
        if key in compute:
            checks.append((isinstance(compute[key], bool), f"compute.{key}", compute[key],
                           f"use compute.{key}=true or false"))
    checks.append((_positive_int(dataset.get("image_size", 1)), "dataset.image_size", dataset.get("image_size"),
                   "use a size in pixels, 1 or more, e.g. dataset.image_size=32"))
    checks.append((_positive_int(dataset.get("channels", 1)), "dataset.channels", dataset.get("channels"),
                   "use dataset.channels=1 (grey) or 3 (colour)"))
    classes = dataset.get("num_classes")
    checks.append((classes is None or _positive_int(classes), "dataset.num_classes", classes,
                   "use a number of classes, 1 or more, or dataset.num_classes=null to count them"))
    return checks


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_command_line(argv: list[str]) -> None:
    """Hydra's flags, read as Hydra will read them: a malformed one (`--cfg bogus`) or two commands at
    once (`-m` with `--cfg` or `--info`) is one line, not argparse's usage text or Hydra's traceback."""
    from runner.hydra_adapter import args_parser

    parser = args_parser()

    def refuse(message: str) -> None:
        raise ConfigError(f"{message}; see python -m runner --help")

    parser.error = refuse  # type: ignore[method-assign]
    args = parser.parse_intermixed_args(argv)
    given = [flag for flag, on in (("--run", args.run), ("-m/--multirun", args.multirun),
                                   (f"--cfg {args.cfg}", args.cfg is not None), ("--info", args.info is not None),
                                   ("--shell-completion", args.shell_completion)) if on]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} cannot be combined: give one of them (e.g. drop -m to print "
                          f"one run's config with --cfg job, or drop --cfg to run the sweep)")
    if args.resolve and args.cfg is None and not args.help:
        raise ConfigError("--resolve only works with --cfg: add --cfg job, or drop --resolve")


LOG_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET")
LOG_FILE_SETTING = "handlers.file.filename"  # the run's own log file: an interpolation of the run folder


def check_hydra_settings(hydra: DictConfig) -> None:
    """The `hydra` node's values that Hydra acts on before the job starts (it makes the run folder
    first, so these are checked before Hydra runs): logging settings and the launcher's n_jobs."""
    for name in ("job_logging", "hydra_logging"):
        node = hydra._get_node(name) if name in hydra else None  # noqa: SLF001
        if isinstance(node, DictConfig) and not node._is_none():  # noqa: SLF001
            _check_logging_values(node, f"hydra.{name}", "")
    for where, key, fix in (("launcher", "n_jobs", "a number of processes, or -1 for all cores"),
                            ("sweeper", "n_jobs", "1 or more trials at once")):
        node = hydra.get(where)
        value = node.get(key) if isinstance(node, DictConfig) else None
        if value is None:
            continue
        ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or where == "launcher" and value < 0)
        if not ok:
            raise ConfigError(f"hydra.{where}.{key}={value} is invalid: use {fix}, e.g. hydra.{where}.{key}=2")


def _check_logging_values(node: DictConfig | ListConfig, key: str, rel: str) -> None:
    """Logging settings are written out: an interpolation (`${oc.env:...}`) is refused, and a level
    must be a level name or number (Hydra would otherwise fail after making the run folder)."""
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    for name in keys:
        child = node._get_node(name)  # noqa: SLF001
        where, here = f"{key}.{name}", f"{rel}.{name}".lstrip(".")
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation():  # noqa: SLF001
            if not child._is_none():  # noqa: SLF001
                _check_logging_values(child, where, here)
            continue
        value = child._value() if child is not None else None  # noqa: SLF001
        if child is not None and child._is_interpolation() and here != LOG_FILE_SETTING:  # noqa: SLF001
            raise ConfigError(f"{where}={value} is not allowed: logging settings are plain values, "
                              f"not interpolations; write the value out")
        if name == "level" and not (isinstance(value, int) or str(value).upper() in LOG_LEVELS):
            raise ConfigError(f"{where}={value} is not a logging level: use one of "
                              "CRITICAL, ERROR, WARNING, INFO, DEBUG or NOTSET")
