"""`resume=CHECKPOINT`: the run's recipe comes from the checkpoint; the command line may change only a few keys.

A resumed run continues the checkpoint's training: its stored config (model, optimizer,
scheduler, batch size, augmentation, data set, loss options, seed) is the run's config, so
`resume=outputs/runs/X/checkpoint.pth.tar` alone continues run X however it was started. What
the user typed (Hydra's task overrides, less `resume=` itself) is laid over it where resume
allows the key (`may_change`):
  epochs        train on to a new total (not fewer than done); refused where the scheduler's
                length is fixed by the old total (cosine's T_max, one-cycle's epochs);
  lr            takes effect, set on the optimizer after its state is loaded, when the learning
                rate is constant (scheduler=none); refused under any other scheduler, which owns it;
  dataset.root  the same data set, moved (and dataset.download: the checkpoint's is not taken);
  device        continue on another device (recorded in the run's config);
  and every key that changes only speed or display (runner/config/keys.py: num_workers,
  progress, tensorboard, logger, compute.* but amp, dataset.download, ...).
A typed key outside those is accepted only when it asks for what the checkpoint already has;
otherwise it is refused with one line naming it. Values the config derives from a changed key
(`optimizer.lr: ${lr}`) follow it. The checkpoint is data: its parts are checked
(runner/record/checkpoint.py), its classes against runner/trust/targets.py, its `hydra` settings ignored, and
the model, optimizer and scheduler restored once on the CPU, all before the run writes anything.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable

import torch
from hydra.utils import execution_whitelist
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.errors import ConfigError
from runner.config.keys import ABSENT as _ABSENT, changes_result, differences, flatten
from runner.config.schema import check_config
from runner.record.checkpoint import check_resume_state, check_stored_config, load_checkpoint, restore_on_cpu
from runner.run.compute import configure_compute, pick_device
from runner.trust.targets import run_whitelist

# The result keys resume applies itself (_check_rules); speed and display keys may change too.
RESUME_CHANGES = {"epochs", "lr", "optimizer.lr", "device", "dataset.root"}
MAY_CHANGE_TEXT = ("epochs, lr, dataset.root, device, and speed or display keys "
                   "(num_workers, progress, compute.* but amp)")
LENGTH_KEYS = ("T_max", "epochs", "total_steps")  # a scheduler option that fixes the schedule's length
TRAIN_GROUPS = ("model", "dataset", "optimizer", "scheduler", "augmentation")
RECIPE_KEYS = ("batch_size", "lr", "epochs", "seed", "label_smoothing", "grad_clip")  # a stored run has them all


def may_change(key: str) -> bool:
    """Whether a resumed run may take the dotted `key` from the command line."""
    return key in RESUME_CHANGES or not changes_result(key)


def _changed(key: str, now: Any, then: Any, allowed: Callable[[str], bool]) -> list[str]:
    """Differences under `key` outside `allowed`; a class count asked as null (filled from the data) is no change."""
    out = differences({key: now} if now is not _ABSENT else {}, {key: then} if then is not _ABSENT else {}, allowed)
    out = [d for d in out if not (d.split(" ")[0].endswith("num_classes") and d.endswith("-> None)"))]
    return sorted(out, key=lambda d: not d.split(" ")[0].endswith("_target_"))  # another class says most


# ---------------------------------------------------------------- the recipe
def resume_from_checkpoint(cfg: DictConfig, typed: list[str] | None = None) -> dict[str, Any]:
    """Make `cfg` the checkpoint's recipe plus what the command line may change; return the checked state.

    `typed`: the task overrides the user typed; None (a caller without a command line) takes
    every key of `cfg` as asked for. Raises ConfigError, having written nothing, if the checkpoint
    is unusable or the command line asks for another run.
    """
    path = str(cfg.resume)
    where = f"resume={path}"
    key = _checked_key(path, typed)
    if key is not None and key in _CHECKED:  # the command-line check before Hydra acted did it all, here
        recipe, state = _CHECKED.pop(key)  # taken once: the run holds the state from here
        _install(cfg, recipe, path)
        return state
    state = load_checkpoint(path, key="resume")
    check_resume_state(state, where)
    stored = {k: v for k, v in state["config"].items() if k != "hydra"}  # Hydra's settings are the command's own
    check_stored_config(stored, where, TRAIN_GROUPS)  # its classes were checked as it was read
    missing = [key for key in RECIPE_KEYS if key not in stored]
    if missing:
        raise ConfigError(f"{where} is damaged: its config has no {', '.join(missing)}; "
                          f"pass a checkpoint.pth.tar written by the runner")
    recipe = _recipe(cfg, stored, _typed_keys(cfg, typed), path)
    _check_rules(recipe, stored, state, path)
    _install(cfg, recipe, path)
    check_config(cfg)
    configure_compute(cfg.compute, pick_device(str(cfg.device)))  # a device or switch this machine can't give
    with execution_whitelist(run_whitelist(cfg), reset=True):
        restore_on_cpu(cfg, state, where)
    if key is not None:
        _CHECKED[key] = (recipe, state)
    return state


# What resume_from_checkpoint found for a checkpoint file and command line, so that the run's own
# call after the command-line check (runner/trust/preflight.py) does not load and restore it again.
_CHECKED: dict[tuple, tuple[dict[str, Any], dict[str, Any]]] = {}


def _checked_key(path: str, typed: list[str] | None) -> tuple | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None  # load_checkpoint says what is wrong
    return os.path.realpath(path), stat.st_mtime_ns, stat.st_size, None if typed is None else tuple(typed)


def check_resume_command(cfg: DictConfig) -> None:
    """For the command-line check before Hydra acts: the composed config, `hydra` node included."""
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    resume_from_checkpoint(job, list(cfg.hydra.overrides.task))


def _typed_keys(cfg: DictConfig, typed: list[str] | None) -> list[tuple[str, str]]:
    """(as typed, config path) for each override but resume=."""
    if typed is None:
        return [(key, key) for key in cfg if key not in ("resume", "hydra")]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for override in OverridesParser.create().parse_overrides(list(typed)):
        path = override.package or override.key_or_group
        if path != "resume":
            out.append((override.input_line or path, path))
    return out


def _raw(cfg: DictConfig, path: str) -> Any:
    """The node at `path` as composed, interpolations unresolved, or _ABSENT."""
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, DictConfig) or node._is_none() or part not in node:  # noqa: SLF001
            return _ABSENT
        node = node._get_node(part)  # noqa: SLF001
    if isinstance(node, (DictConfig, ListConfig)):
        return None if node._is_none() else OmegaConf.to_container(node, resolve=False)  # noqa: SLF001
    return node._value()  # noqa: SLF001


def _put(cfg: DictConfig, path: str, value: Any) -> None:
    if value is _ABSENT:
        parent, _, last = path.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and last in node:
            del node[last]
    else:
        OmegaConf.update(cfg, path, value, merge=False, force_add=True)


def _resolved(mixed: DictConfig, path: str) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(mixed, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path} can't be resolved with resume= ({str(e).strip().splitlines()[0]}); "
                          f"write the value out") from None


def _at(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _recipe(cfg: DictConfig, stored: dict[str, Any], typed: list[tuple[str, str]], path: str) -> dict[str, Any]:
    """The stored config, its derived values tied to their sources again, and the allowed typed keys laid over."""
    mixed = _with_derived_values(cfg, stored)
    if mixed.dataset.get("download"):  # only the command line may have the run download (write) a data set
        mixed.dataset.download = False
    for text, key in typed:
        if _raw(cfg, key) is _ABSENT and _at(stored, key) is _ABSENT and not text.startswith("~"):
            raise ConfigError(f"resume={path} takes the run's recipe from the checkpoint, and {text} changes "
                              f"keys through a config file; drop {text}, or start a new run without resume=")
        asked = copy.deepcopy(mixed)
        _put(asked, key, _raw(cfg, key))
        now, then = _at(_resolved(asked, text), key), _at(stored, key)
        if may_change(key):
            if now != then:
                _put(mixed, key, _raw(cfg, key))
            continue
        changed = _changed(key, now, then, may_change)
        if changed:
            raise ConfigError(f"resume={path} continues the checkpoint's run and keeps its recipe, but {text} "
                              f"changes it: {changed[0]}; drop {text} (resume may change only {MAY_CHANGE_TEXT}), "
                              f"or start a new run without resume=")
    recipe = _resolved(mixed, "the checkpoint's config")
    recipe["resume"] = path
    return recipe


def _with_derived_values(cfg: DictConfig, stored: dict[str, Any]) -> DictConfig:
    """The stored config with each value the composed config derives (`optimizer.lr: ${lr}`) written as
    that interpolation again, where it gives the stored value: a changed source then carries it along."""
    mixed = OmegaConf.create(stored)
    flat = flatten(stored)
    candidates = {p: expr for p, expr in _interpolations(cfg, "") if p in flat and not isinstance(flat[p], tuple)}
    for p, expr in candidates.items():
        OmegaConf.update(mixed, p, expr, merge=False)
    for _ in range(len(candidates) + 1):  # drop any that don't give the stored value, until none is left
        wrong = [p for p in candidates if _select(mixed, p) != flat[p]]
        if not wrong:
            break
        for p in wrong:
            OmegaConf.update(mixed, p, flat[p], merge=False)
            del candidates[p]
    return mixed


def _select(cfg: DictConfig, path: str) -> Any:
    try:
        return OmegaConf.select(cfg, path, throw_on_missing=True)
    except Exception:  # noqa: BLE001 (an interpolation that doesn't resolve here is not a derived value)
        return _ABSENT


def _interpolations(node: DictConfig, prefix: str):
    for key in node.keys():
        child = node._get_node(key)  # noqa: SLF001
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_interpolation():  # noqa: SLF001
            yield from _interpolations(child, f"{prefix}{key}.")
        elif not isinstance(child, (DictConfig, ListConfig)) and child._is_interpolation():  # noqa: SLF001
            yield f"{prefix}{key}", child._value()  # noqa: SLF001


# ---------------------------------------------------------------- what may change, and how
def _constant_lr(scheduler: dict[str, Any]) -> bool:
    return str(scheduler.get("_target_", "")).endswith(".ConstantLR") and scheduler.get("factor") == 1.0


def _length_key(node: Any, prefix: str = "scheduler") -> str | None:
    """The first scheduler option that fixes the schedule's length, as `scheduler.KEY=VALUE`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in LENGTH_KEYS and value is not None:
                return f"{prefix}.{key}={value}"
            found = _length_key(value, f"{prefix}.{key}")
            if found:
                return found
    return None


def _check_rules(now: dict[str, Any], then: dict[str, Any], state: dict[str, Any], path: str) -> None:
    """Epochs, lr, and any derived value that changed with them."""
    done = state["epoch"]
    if not isinstance(now.get("epochs"), int) or now["epochs"] < done:
        raise ConfigError(f"epochs={now.get('epochs')} is fewer than the {done} epochs resume={path} "
                          f"has done; use epochs={done} or more")
    length = _length_key(then.get("scheduler"))
    if now["epochs"] != then.get("epochs") and length:
        raise ConfigError(f"epochs={now['epochs']} differs from the {then.get('epochs')} resume={path} was trained "
                          f"with, and its scheduler's length is fixed ({length}, restored from the checkpoint); "
                          f"resume with epochs={then.get('epochs')}, or start a new run")
    old_lr, new_lr = then["optimizer"].get("lr"), now["optimizer"].get("lr")
    if old_lr != new_lr and not _constant_lr(now["scheduler"]):
        scheduler = str(now["scheduler"].get("_target_")).rsplit(".", 1)[-1]
        raise ConfigError(f"lr={new_lr} differs from the {old_lr} resume={path} was trained with, and the "
                          f"scheduler ({scheduler}) sets the lr from its saved state; resume with lr={old_lr}")
    changed = differences(now, then, may_change)
    if changed:
        raise ConfigError(f"resume={path} was trained with other settings: {', '.join(changed[:3])}; they follow "
                          f"a key you changed: drop it, or start a new run without resume=")


def _install(cfg: DictConfig, recipe: dict[str, Any], path: str) -> None:
    """Write the recipe into `cfg` in place (the caller's config object is the run's)."""
    for key, value in recipe.items():
        try:
            cfg[key] = value
        except OmegaConfBaseException as e:
            raise ConfigError(f"resume={path}: the checkpoint's config has {key}={str(value)[:60]}, which a run "
                              f"can't take ({type(e).__name__}); pass a checkpoint.pth.tar written by the "
                              f"runner") from None


def apply_new_lr(cfg: DictConfig, state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """After loading the optimizer's and scheduler's state: put a changed constant lr into effect."""
    old_lr, new_lr = state["config"]["optimizer"].get("lr"), cfg.optimizer.get("lr")
    if old_lr == new_lr or old_lr is None or new_lr is None:
        return
    for group in optimizer.param_groups:  # scaled, so groups with their own lr keep their ratio
        group["lr"] = group["lr"] * new_lr / old_lr
        if "initial_lr" in group:
            group["initial_lr"] = group["initial_lr"] * new_lr / old_lr
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * new_lr / old_lr for lr in scheduler.base_lrs]
