"""What a config may make the runner call: exact allow-lists, checked before anything is built.

A config can come from elsewhere (a `--config-dir`, a checkpoint's stored config), and Hydra's
`instantiate` calls whatever `_target_` names. So every `_target_` in a config is checked here
against an exact list for the place it sits in, at every depth (a nested chain is refused at
its first disallowed link), before Hydra or the runner instantiates anything:

* run groups (`model`, `dataset`, `optimizer`, `scheduler`, `augmentation`): the project's own
  classes and the exact library classes the files in conf/ use (RUN_TARGETS);
* `hydra.sweeper`, `hydra.sweeper.sampler`, `hydra.sweeper.pruner`, `hydra.launcher`,
  `hydra.callbacks.<name>`: the sweepers, samplers, pruners, launchers and callbacks we ship or
  support (HYDRA_TARGETS);
* a checkpoint's stored config (`runner.eval`): only model and data set classes (EVAL_TARGETS).

Besides `_target_`s: the Optuna storage must be a URL string (an object node would be
instantiated), `custom_search_space` (a dotted path Optuna's plugin imports) must be null, the
logging config may only use console handlers and the run's own log file, and `hydra.job.env_set`
may not set variables that make the interpreter or loader run other code.

The lists themselves, and how to allow a new class, are in runner/trust/allowed.py.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from common.errors import ConfigError
from runner.record.run_folder import HYDRA_DIR
from runner.trust.allowed import (ALLOWED_ENV, COMMAND_LINE_ONLY, COMMAND_LINE_ONLY_NODES,
                                  HYDRA_TARGETS, LOG_FORMATTER_KEYS, LOG_HANDLER_KEYS, LOG_STREAMS, OURS_INSTEAD,
                                  RUN_LOG_FILE, RUN_TARGETS)


# ---------------------------------------------------------------- walking a config
def _children(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, (DictConfig, dict)):
        for key in node.keys():
            yield str(key), _raw_child(node, key)
    elif isinstance(node, (ListConfig, list)):
        for i in range(len(node)):
            yield str(i), _raw_child(node, i)


def _raw_child(node: Any, key: Any) -> Any:
    """A child without resolving it: an interpolation that can't resolve yet is still walked."""
    if isinstance(node, (DictConfig, ListConfig)):
        return node._get_node(key)  # noqa: SLF001 (the only way to read a node unresolved)
    return node[key]


def _container(node: Any) -> Any:
    """A child as a container to walk, or None for a plain value.

    An interpolation is resolved first: `${oc.decode:'{_target_: ...}'}` or a reference to
    another node becomes a mapping only when resolved, and instantiate would resolve it.
    One that can't resolve yet (a `${hydra:...}` before Hydra runs the job) is walked again
    when the job's own config is checked.
    """
    if isinstance(node, (DictConfig, ListConfig)) and (node._is_none() or node._is_missing()):  # noqa: SLF001
        return None
    if isinstance(node, (DictConfig, ListConfig, dict, list)):
        return node
    if hasattr(node, "_is_interpolation") and node._is_interpolation():  # noqa: SLF001
        try:
            value = node._dereference_node()  # noqa: SLF001
        except Exception:
            return None
        return _container(value) if isinstance(value, (DictConfig, ListConfig)) else _container(value._value())
    return None


def iter_targets(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(key of the node, its `_target_`) for every node with a `_target_`, at any depth."""
    if isinstance(node, (DictConfig, dict)) and "_target_" in node:
        yield path, _target_of(node, path)
    for key, child in _children(node):
        child = _container(child)
        if child is not None:
            yield from iter_targets(child, f"{path}.{key}" if path else key)


def _target_of(node: Any, path: str) -> Any:
    try:
        return node["_target_"]  # resolves an interpolated target: the name Hydra would import
    except Exception as e:  # an interpolation that can't resolve is refused, not guessed
        raise ConfigError(f"{path}._target_ cannot be resolved ({type(e).__name__}); "
                          f"write the class name out") from None


def _refuse_target(path: str, target: Any, allowed: Iterable[str], why: str) -> ConfigError:
    allowed = sorted(allowed)
    choices = ", ".join(allowed) if allowed else "nothing"
    if str(target) in OURS_INSTEAD:
        choice, what = OURS_INSTEAD[str(target)]
        return ConfigError(f"{path}._target_={target} is not allowed: {why}; use {choice} ({what})")
    return ConfigError(f"{path}._target_={target} is not allowed: {why}; allowed there: {choices} "
                       f"(the list is in runner/trust/allowed.py)")


# ---------------------------------------------------------------- the checks
def check_run_targets(cfg: Any, allowed: dict[str, tuple[str, ...]] = RUN_TARGETS, source: str = "") -> None:
    """Every `_target_` outside `hydra` must sit in one of `allowed`'s groups and name one of its classes."""
    for key, child in _children(cfg):
        child = _container(child)
        if key == "hydra" or child is None:
            continue
        for path, target in iter_targets(child, key):
            group = path.split(".", 1)[0]
            if group not in allowed:
                raise _refuse_target(path, target, (), f"{source}a `_target_` may only sit in the "
                                     f"{', '.join(allowed)} config{'s' if len(allowed) > 1 else ''}")
            if not isinstance(target, str) or target not in allowed[group]:
                raise _refuse_target(path, target, allowed[group], f"{source}not a known {group} class")


def check_hydra_config(hydra: Any) -> None:
    """The `hydra` node: sweeper, sampler, pruner, launcher and callback classes, storage, logging, env."""
    sweeper = hydra.get("sweeper") if isinstance(hydra, (DictConfig, dict)) else None
    if isinstance(sweeper, (DictConfig, dict)):
        if "storage" in sweeper and _container(_raw_child(sweeper, "storage")) is not None:
            raise ConfigError("hydra.sweeper.storage must be a URL string (e.g. sqlite:///optuna.db or "
                              "postgresql://user@host/db) or null, not an object node: it would be instantiated")
        if sweeper.get("custom_search_space") is not None:
            raise ConfigError(f"hydra.sweeper.custom_search_space={sweeper.get('custom_search_space')} is not "
                              f"allowed: it imports and calls a function named by the config; "
                              f"describe the space in hydra.sweeper.params")
    for path, target in iter_targets(hydra, "hydra"):
        pattern = "hydra.callbacks.*" if re.fullmatch(r"hydra\.callbacks\.[^.]+", path) else path
        allowed = HYDRA_TARGETS.get(pattern)
        if allowed is None:
            raise _refuse_target(path, target, (), "Hydra instantiates nothing there")
        if not isinstance(target, str) or target not in allowed:
            raise _refuse_target(path, target, allowed, "not a known class for that place")
    for name in ("job_logging", "hydra_logging"):
        if name in hydra:
            check_logging(_raw_child(hydra, name), f"hydra.{name}")
    check_job_settings(hydra)


def check_logging(node: Any, key: str) -> None:
    """A logging dictConfig may only write to the console and to the run folder's own log file."""
    if not isinstance(node, (DictConfig, dict)):
        return
    raw = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    _refuse_factories(raw, key)
    for name, handler in (raw.get("handlers") or {}).items():
        where = f"{key}.handlers.{name}"
        if not isinstance(handler, dict):
            raise ConfigError(f"{where} must be a mapping with a class")
        cls = handler.get("class")
        if cls not in LOG_HANDLER_KEYS:
            raise ConfigError(f"{where}.class={cls} is not allowed: use logging.StreamHandler, or "
                              f"logging.FileHandler with filename: {RUN_LOG_FILE}")
        if cls == "logging.FileHandler" and handler.get("filename") != RUN_LOG_FILE:
            raise ConfigError(f"{where}.filename={handler.get('filename')} is not allowed: the log file "
                              f"is the run folder's own, filename: {RUN_LOG_FILE}")
        extra = sorted(set(handler) - LOG_HANDLER_KEYS[cls])
        if extra:  # e.g. mode: w (truncate), delay, encoding...
            raise ConfigError(f"{where}.{extra[0]} is not allowed for {cls}; "
                              f"allowed keys: {', '.join(sorted(LOG_HANDLER_KEYS[cls]))}")
        if "stream" in handler and handler["stream"] not in LOG_STREAMS:
            raise ConfigError(f"{where}.stream={handler['stream']} is not allowed: use {' or '.join(LOG_STREAMS)}")
    for name, formatter in (raw.get("formatters") or {}).items():
        extra = sorted(set(formatter or {}) - LOG_FORMATTER_KEYS)
        if extra:
            raise ConfigError(f"{key}.formatters.{name}.{extra[0]} is not allowed: a formatter takes "
                              f"{', '.join(sorted(LOG_FORMATTER_KEYS))}")
    if raw.get("filters"):
        raise ConfigError(f"{key}.filters is not allowed: filters are code; drop them")


def _refuse_factories(raw: Any, key: str) -> None:
    """`()` (a factory to call) and `ext://` (an object to import) anywhere in a logging config."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            if k == "()":
                raise ConfigError(f"{key}.()={v} is not allowed: logging factories are code")
            _refuse_factories(v, f"{key}.{k}")
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            _refuse_factories(v, f"{key}.{i}")
    elif isinstance(raw, str) and raw.startswith("ext://") and raw not in LOG_STREAMS:
        raise ConfigError(f"{key}={raw} is not allowed: ext:// imports an object; use {' or '.join(LOG_STREAMS)}")


def check_job_settings(hydra: Any) -> None:
    """Settings that would write Hydra's files elsewhere or change how other code is loaded."""
    def setting(key: str) -> Any:  # unset (`???`) or absent reads as None: Hydra fills it in itself
        if not isinstance(hydra, DictConfig):
            return None
        return resolved_or_written(hydra, key)  # ${hydra.job.num} is the launcher's to set: as written

    name = setting("job.name")
    if name is not None and (not re.fullmatch(r"[\w.-]+", str(name)) or str(name) in (".", "..")):
        raise ConfigError(f"hydra.job.name={name} is not allowed: use letters, digits, '.', '-' and '_' "
                          f"(it names the log file in the run folder)")
    for var in (setting("job.env_set") or {}):
        if str(var) not in ALLOWED_ENV:
            raise ConfigError(f"hydra.job.env_set.{var} is not allowed: a job may set only "
                              f"{', '.join(ALLOWED_ENV[:-2])}; set other variables in your shell if you mean it")
    for key, example in (("output_subdir", HYDRA_DIR), ("sweep.subdir", "${hydra.job.num}")):
        value = setting(key)
        if value is not None and not _inside(str(value)):
            raise ConfigError(f"hydra.{key}={value} is not allowed: use a folder name inside the "
                              f"{'run' if key == 'output_subdir' else 'sweep'} folder, e.g. {example}")


def _inside(relative: str) -> bool:
    """A path that stays inside the folder it is joined to: not absolute, no `~`, no `..` step."""
    return not relative.startswith(("/", "~", "\\")) and ".." not in re.split(r"[/\\]", relative)


def check_command_line_only(cfg: Any, typed_keys: Iterable[str]) -> None:
    """What only a typed override may choose: COMMAND_LINE_ONLY settings (empty otherwise), and run
    and sweep folders outside the working folder (a config file may name only relative ones inside
    it, and a cluster launcher's own folder must sit inside the sweep dir)."""
    typed = list(typed_keys)

    def was_typed(key: str) -> bool:
        return any(key == t or key.startswith(f"{t}.") or t.startswith(f"{key}.") for t in typed)

    for key, why in COMMAND_LINE_ONLY.items():
        value = resolved_or_written(cfg, key)
        if value in (None, "", [], {}):  # an empty DictConfig or ListConfig equals {} or []
            continue
        if not was_typed(key):
            raise ConfigError(f"{key} is not allowed from a config file: {why}; if you mean it, type it on "
                              f"the command line ({key}=...)")
    for node, (why, from_files) in COMMAND_LINE_ONLY_NODES.items():
        for key, value in _leaves(resolved_or_written(cfg, node), node):
            if value not in (None, "", [], {}) and key[len(node) + 1:].split(".")[0] not in from_files \
                    and not was_typed(key):
                raise ConfigError(f"{key} is not allowed from a config file: {why}; if you mean it, type it on "
                                  f"the command line ({key}=...)")
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        value = resolved_or_written(cfg, key)
        if value is not None and not was_typed(key) and not _inside(str(value)):
            raise ConfigError(f"{key}={value} is not allowed from a config file: it leaves the working "
                              f"folder; if you mean it, type it on the command line ({key}=...)")
    folder = resolved_or_written(cfg, "hydra.launcher.submitit_folder")
    sweep_dir = resolved_or_written(cfg, "hydra.sweep.dir")
    if folder is not None and not was_typed("hydra.launcher.submitit_folder") and not _within(folder, sweep_dir):
        raise ConfigError(f"hydra.launcher.submitit_folder={folder} is not allowed from a config file: it "
                          f"leaves the sweep dir; if you mean it, type it on the command line")


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of each setting under a mapping, a list counting as one value."""
    if isinstance(node, DictConfig):
        try:
            node = OmegaConf.to_container(node, resolve=True)
        except Exception:  # what only a job can resolve: as written
            node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}")
    elif node is not None:
        yield path, node


def resolved_or_written(cfg: Any, key: str) -> Any:
    """The value at `key` resolved, or as written where it refers to what only a job has (${hydra.job.num})."""
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    except Exception:  # ${hydra.job.num} and other values only a job has: the text as written
        node: Any = OmegaConf.to_container(cfg, resolve=False)
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node


def _within(path: Any, folder: Any) -> bool:
    import os

    if str(path).startswith("${hydra.sweep.dir}/"):  # as written, where the sweep dir isn't resolvable here
        path = str(path).replace("${hydra.sweep.dir}", str(folder), 1)
    path, folder = os.path.normpath(str(path)), os.path.normpath(str(folder))
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_config_trust(cfg: Any) -> None:
    """All of the above for a composed config, its `hydra` node included when it has one."""
    check_run_targets(cfg)
    if "hydra" in cfg and cfg.hydra is not None:
        check_hydra_config(_raw_child(cfg, "hydra"))


# ---------------------------------------------------------------- Hydra's own whitelist
def hydra_whitelist(names: Iterable[str]) -> tuple[str, ...]:
    """`names` plus the canonical name of each (torch.nn.Identity is torch.nn.modules.linear.Identity).

    Hydra re-checks a callable result (an nn.Module instance is one) by its class's canonical
    name, so both spellings go in. Only call this with names from the lists above: it imports them.
    """
    from runner.hydra_adapter import locate  # the resolver Hydra itself uses

    out = list(dict.fromkeys(names))
    for name in list(out):
        obj = locate(name)
        canonical = f"{obj.__module__}.{obj.__qualname__}"
        if canonical not in out:
            out.append(canonical)
    return tuple(out)


def flat(groups: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for names in groups.values() for name in names))


def run_whitelist(cfg: Any, allowed: dict[str, tuple[str, ...]] = RUN_TARGETS, source: str = "") -> tuple[str, ...]:
    """Check `cfg`'s run groups, then return Hydra's whitelist for exactly the classes they name."""
    check_run_targets(cfg, allowed, source)
    names = [target for key in allowed if key in cfg for _, target in iter_targets(_container(_raw_child(cfg, key))
                                                                                   or {}, key)]
    return hydra_whitelist(names)
