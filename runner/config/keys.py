"""What each config key is: the one home of which keys change a run's result.

Every key of a run's config has one of four kinds:
  result     changes the numbers a run produces, or the value it reports (model.*, dataset.*,
             batch_size, objective, device, compute.amp, ...);
  per_trial  a result key that each trial of one fused group may set on its own, because each
             trial has its own optimizer, scheduler, random streams and length (lr, seed, epochs,
             label_smoothing, grad_clip, the optimizer's and scheduler's options but their class);
  speed      how the process computes: threads, kernels, memory layout, compilation, graph
             capture, where the data set is kept and how it is fetched. The numbers are the same
             up to float rounding order; one fused group shares one process, so its trials agree;
  display    what a run shows or records beside its numbers, and how it was started (progress,
             tensorboard, the trackers of logger, rerun, resume). Each run folder has its own.

`device` is a result key: a run on another device differs by more than rounding. The random
draws of augmentation and dropout come from the training device's own generator, so a
seed gives other numbers on CUDA than on the CPU, and `compute.amp=auto` (the default) means
bf16 on CUDA and float32 on the CPU. `compute.amp` is a result key for the same reason.

The rules derived from the kinds (each module imports them from here):
  * a run folder holds the requested run when every result and per_trial key agrees
    (runner/sweep/rerun.py, runner/results/best_run.py);
  * the runs of one Optuna study repeat every result and per_trial override
    (runner/search/study_rules.py);
  * a resumed run may take speed and display keys from the command line, plus the few result
    keys resume applies itself (runner/run/resume.py);
  * jobs fuse when they differ only in per_trial and display keys (runner/fused/groups.py); a
    shorter trial shares a longer one's epochs when no result or per_trial key but epochs differs
    (runner/fused/prefix.py);
  * the collector's table and TensorBoard's HParams show every key but display keys
    (runner/collect.py, runner/record/tb_hparams.py): a speed key still tells apart runs' timings.

`KINDS` declares a key by its dotted path. A group whose keys are all options of one class
(model, dataset, ...) is declared once by its name and may declare a few of its keys apart
(`optimizer._target_`); every key of `compute` and every top-level key is declared on its own,
so a new one needs a kind (tests/test_config_keys.py composes every config file to check). A key
declared nowhere (in a stored config from another version, or added with `+`) counts as result:
the safe side, since a changed result key only refuses or reruns.
"""

from __future__ import annotations

from typing import Any, Callable

RESULT, PER_TRIAL, SPEED, DISPLAY = "result", "per_trial", "speed", "display"
CHANGES_RESULT = (RESULT, PER_TRIAL)

KINDS: dict[str, str] = {
    # top-level keys
    "batch_size": RESULT,
    "objective": RESULT,  # the value a run reports to its sweeper
    "replicates": RESULT,  # seeds averaged per job
    "device": RESULT,  # see above: its own random streams, and amp=auto's precision
    "lr": PER_TRIAL,
    "epochs": PER_TRIAL,
    "seed": PER_TRIAL,
    "label_smoothing": PER_TRIAL,
    "grad_clip": PER_TRIAL,
    "num_workers": SPEED,  # loading only: augmentation runs in the training process
    "resume": DISPLAY,
    "rerun": DISPLAY,
    "progress": DISPLAY,
    "tensorboard": DISPLAY,
    # compute: each key on its own
    "compute.amp": RESULT,  # bf16 autocast changes the arithmetic
    "compute.channels_last": SPEED,
    "compute.compile": SPEED,
    "compute.cuda_graph": SPEED,
    "compute.cudnn_benchmark": SPEED,
    "compute.threads": SPEED,
    "compute.data_path": SPEED,
    "compute.data_on_device": SPEED,
    "compute.trials_per_gpu": SPEED,
    # groups of one class's options
    "model": RESULT,
    "augmentation": RESULT,
    "adversary": RESULT,
    "dataset": RESULT,  # root too: for an image folder it names the images
    "dataset.download": SPEED,  # fetch the same data set if missing
    "optimizer": PER_TRIAL,
    "optimizer._target_": RESULT,  # a fused group steps one optimizer class
    "scheduler": PER_TRIAL,
    "scheduler._target_": RESULT,
    "logger": DISPLAY,  # the trackers a run also logs to (conf/logger/)
}
# Groups declared as a whole: any key inside has the group's kind unless declared apart.
WHOLE_GROUPS = ("model", "augmentation", "adversary", "dataset", "optimizer", "scheduler", "logger")


def declared_kind(key: str) -> str | None:
    """The kind `KINDS` gives the dotted `key` (itself, or the whole group it is in); None if undeclared."""
    if key in KINDS:
        return KINDS[key]
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in KINDS and parts[0] in WHOLE_GROUPS:
            return KINDS[prefix]
    return None


def kind_of(key: str) -> str:
    """The kind of the dotted `key` (an override's `+`/`~` ignored); result where none is declared."""
    return declared_kind(key.lstrip("+~")) or RESULT


def changes_result(key: str) -> bool:
    """True for a result or per_trial key: two runs that differ in it are different runs."""
    return kind_of(key) in CHANGES_RESULT


def result_neutral(key: str) -> bool:
    """True for a speed or display key: two runs that differ only in such keys are the same run."""
    return not changes_result(key)


def is_display(key: str) -> bool:
    """True for a key that only shows or records a run (not a column of the tables, not an hparam)."""
    return kind_of(key) == DISPLAY


def fusible_apart(key: str) -> bool:
    """True for a key the trials of one fused group may each set on their own (per_trial, display)."""
    return kind_of(key) in (PER_TRIAL, DISPLAY)


def flatten(tree: Any, prefix: str = "", limit: int | None = None) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become tuples. ValueError past `limit` keys."""
    out: dict[str, Any] = {}
    stack = [(prefix, tree)]
    while stack:
        at, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{at}{key}.", value) for key, value in reversed(list(node.items())))
        else:
            out[at[:-1]] = tuple(node) if isinstance(node, list) else node
            if limit is not None and len(out) > limit:
                raise ValueError(f"more than {limit} keys")
    return out


def without(tree: dict[str, Any], drop: Callable[[str], bool], prefix: str = "") -> dict[str, Any]:
    """A copy of the nested `tree` without the keys (at any depth) for which `drop(dotted key)` is true."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if drop(path):
            continue
        out[key] = without(value, drop, f"{path}.") if isinstance(value, dict) else value
    return out


ABSENT = "<absent>"


def differences(now: dict[str, Any], then: dict[str, Any], ignore: Callable[[str], bool]) -> list[str]:
    """`key (then -> now)` for every flattened key whose value differs, but those `ignore(key)` is true for."""
    flat_now, flat_then = flatten(now), flatten(then)
    out = []
    for key in sorted(set(flat_now) | set(flat_then)):
        if ignore(key):
            continue
        old, new = flat_then.get(key, ABSENT), flat_now.get(key, ABSENT)
        if old != new:
            out.append(f"{key} ({old} -> {new})")
    return out
