"""Build a config group's object, turning a constructor's complaint into one line naming the option.

`build(cfg.optimizer, "optimizer", params=...)` is `instantiate(cfg.optimizer)(params=...)`; when
the class refuses its options (`+optimizer.foo=1`: an unexpected keyword; `optimizer.momentum=abc`:
a string where a number goes; `optimizer.momentum=-1`: "Invalid momentum value") the TypeError or
ValueError becomes a ConfigError naming the key, the value and the fix, printed as one line like
the top-level keys' errors. One wrapper for every group, no per-option rules: it reads the class's
signature for the option names and default types.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError

if TYPE_CHECKING:
    import torch

UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def build(node: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """instantiate(node), then call the result with args/kwargs if given (a `_partial_` config)."""
    try:
        built = instantiate(node)
        return built(*args, **kwargs) if args or kwargs else built
    except ConfigError:
        raise
    except (TypeError, ValueError, InstantiationException) as e:
        raise ConfigError(describe(e, node, key)) from None


def describe(error: Exception, node: Any, key: str) -> str:
    """One line: which option of `key` the constructor refused, and what to do."""
    options = _options(node)
    key, options = _failing_node(error, key, options)
    target = str(options.get("_target_", key))
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    accepted = _parameters(target)
    unexpected = UNEXPECTED.search(str(error))
    if unexpected:
        name = unexpected.group(1)
        known = ", ".join(p for p in accepted if p not in ("self", "params", "optimizer")) or "see its docs"
        return f"{key}.{name} is not an option of {target}: remove it (options: {known})"
    for name, value in options.items():  # a string where the class's default is a number
        default = accepted.get(name, inspect.Parameter.empty)
        if _is_number(default) and isinstance(value, str) and not _parses_as_number(value):
            return (f"{key}.{name}={value} has the wrong type: {target} expects a number "
                    f"(default {default}), e.g. {key}.{name}={default}")
    for name, value in options.items():  # the option the message talks about ("betas": "Invalid beta ...")
        stem = name[:-1] if name.endswith("s") and len(name) > 3 else name
        if not name.startswith("_") and re.search(rf"\b({re.escape(name)}|{re.escape(stem)})\b", message):
            return f"{key}.{name}={value} is invalid for {target}: {message}"
    return f"{key} ({target}) refused its options: {message}; check the values in conf/{key.split('.')[0]}/"


def _failing_node(error: Exception, key: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The nested node whose constructor failed (Hydra notes its `full_key`), and its options."""
    notes = [n[len("full_key: "):] for n in getattr(error, "__notes__", []) if n.startswith("full_key: ")]
    if not notes or not notes[0]:
        return key, options
    parts = re.findall(r"[^.\[\]]+", notes[0])  # "augmentation.steps[1].transform"
    if parts[0] == key:
        parts = parts[1:]
    node: Any = options
    for part in parts:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return key, options
    return (".".join([key, *parts]), node) if isinstance(node, dict) else (key, options)


def _options(node: Any) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        try:
            return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
        except Exception:
            return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]
    return dict(node) if isinstance(node, dict) else {}


def _parameters(target: str) -> dict[str, Any]:
    """Parameter name -> default of the class a config names (already checked against the allow-list)."""
    try:
        from runner.hydra_adapter import locate

        return {name: p.default for name, p in inspect.signature(locate(target)).parameters.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    except Exception:
        return {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Instantiate the scheduler config; `interval` says whether it steps per epoch or per batch."""
    options = OmegaConf.to_container(cfg, resolve=True)
    interval = options.pop("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise ConfigError(f"scheduler.interval={interval} is invalid: use epoch or step")
    if options.get("steps_per_epoch", "unset") is None:  # e.g. OneCycleLR: only the loop knows it
        options["steps_per_epoch"] = steps_per_epoch
    return build(options, "scheduler", optimizer), interval
