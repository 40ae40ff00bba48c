"""Which jobs of a sweep can train as one fused run: those equal in everything but per-trial scalars.

What may differ inside a group (each trial has its own optimizer, scheduler, RNG and run folder):
the per_trial and display keys of runner/config/keys.py: lr, every optimizer option but its class
(momentum, weight decay, betas, ...), every scheduler option but its class, label smoothing, grad
clip, seed and epochs; progress, tensorboard, logger and rerun. Everything else (model and its
options, data set, batch size, augmentation, compute, device, adversary, ...) must be equal.
A job with `resume=`, an adversary or torch.compile never fuses: it runs as a single run; a job with
`replicates` above 1 runs as a job of its own, whose replicates fuse among themselves.
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from runner.config.keys import fusible_apart, without


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's config as its task gets it: the launcher's `hydra` node can't resolve before the job runs."""
    job_cfg = cfg.copy()
    with open_dict(job_cfg):
        job_cfg.pop("hydra", None)
    return job_cfg


def prefix_families(cfgs: list[DictConfig], members: list[int]) -> list[list[int]]:
    """`members` split into trajectories: each list is a leader and the trials sharing its epochs.

    An Optuna trial with a pruner is a family of its own: it shares no epochs (runner/fused/loop.py).
    """
    from runner.fused.prefix import prefix_leaders

    sharing = [i for i in members if not has_pruner(cfgs[i])]
    leaders = prefix_leaders([without_hydra(cfgs[i]) for i in sharing])
    families: dict[int, list[int]] = {}
    for position, i in enumerate(sharing):
        families.setdefault(leaders.get(position, position), []).append(i)
    return list(families.values()) + [[i] for i in members if i not in sharing]


def has_pruner(cfg: DictConfig) -> bool:
    """True for the job of an Optuna trial with a pruner (the sweeper sets its trial number in env_set)."""
    from runner.search.pruning import TRIAL_ENV, wants_pruning

    hydra = cfg.get("hydra")
    return (hydra is not None and TRIAL_ENV in (hydra.job.get("env_set") or {})
            and wants_pruning(hydra.get("sweeper", {}).get("pruner")))


def group_key(cfg: DictConfig) -> str | None:
    """A key equal for jobs that can fuse together; None for a job that must run on its own."""
    plain: dict[str, Any] = OmegaConf.to_container(without_hydra(cfg), resolve=True)  # type: ignore[assignment]
    adversary = (plain.get("adversary") or {}).get("_target_")
    if plain.get("resume") or adversary or plain.get("compute", {}).get("compile"):
        return None
    if plain.get("replicates", 1) != 1:  # such a job fuses its own replicates (runner/sweep/replicates.py)
        return None
    return json.dumps(without(plain, fusible_apart), sort_keys=True, default=str)


def fusible_groups(cfgs: list[DictConfig]) -> tuple[list[list[int]], list[int]]:
    """(groups of job indices to fuse, each of 2 or more, in job order; indices to run singly)."""
    by_key: dict[str, list[int]] = {}
    alone: list[int] = []
    for i, cfg in enumerate(cfgs):
        key = group_key(cfg)
        if key is None:
            alone.append(i)
        else:
            by_key.setdefault(key, []).append(i)
    groups = [members for members in by_key.values() if len(members) >= 2]
    alone += [members[0] for members in by_key.values() if len(members) == 1]
    return groups, sorted(alone)
