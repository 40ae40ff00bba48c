"""Epoch-prefix sharing: trials that differ only in `epochs` share one trajectory.

With a schedule that does not depend on the total (constant or step lr), the first E epochs of
a longer run are exactly an E-epoch run of the same config and seed. So only the longest of
such trials trains; each shorter one (a "follower") records the leader's rows, best and
checkpoint for its own first E epochs, in its own folder, with its own config.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig, OmegaConf

from runner.config.keys import result_neutral, without

# Schedules whose lr at epoch e does not depend on the run's total epochs.
TOTAL_FREE_SCHEDULERS = {"torch.optim.lr_scheduler.ConstantLR", "torch.optim.lr_scheduler.StepLR"}


def _without_epochs(cfg: DictConfig) -> str | None:
    plain = OmegaConf.to_container(cfg, resolve=True)
    if (plain.get("scheduler") or {}).get("_target_") not in TOTAL_FREE_SCHEDULERS:
        return None
    # The follower records the leader's numbers: every other key that changes them must agree.
    shared = without(plain, lambda key: key == "epochs" or result_neutral(key))
    return json.dumps(shared, sort_keys=True, default=str)


def prefix_leaders(cfgs: list[DictConfig]) -> dict[int, int]:
    """{follower index: leader index}: each follower is equal to its leader but for fewer (or equal) epochs."""
    by_key: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = _without_epochs(cfg)
        if key is not None:
            by_key.setdefault(key, []).append(i)
    followers: dict[int, int] = {}
    for members in by_key.values():
        leader = max(members, key=lambda i: (int(cfgs[i].epochs), -i))
        followers.update({i: leader for i in members if i != leader})
    return followers
