"""Classes a config names that have moved: a run recorded before the move is read with their new names.

A run folder's config.yaml and a checkpoint keep the `_target_` strings they were trained with.
Reading them through `with_current_targets` lets an older run be reused by a re-run, resumed
with `resume=`, and collected into the same table column as a run trained today.
"""

from __future__ import annotations

from typing import Any

MOVED_TARGETS = {
    "runner.schedulers.LinearWarmup": "runner.run.schedulers.LinearWarmup",
    "runner.attacks.Adversary": "runner.run.attacks.Adversary",
    "runner.trackers.MLflowTracker": "runner.record.trackers.MLflowTracker",
    "runner.trackers.WandbTracker": "runner.record.trackers.WandbTracker",
}


def with_current_targets(tree: Any) -> Any:
    """`tree` (plain dicts and lists) with every moved `_target_` renamed; other values as they are."""
    if isinstance(tree, dict):
        return {k: (MOVED_TARGETS.get(v, v) if k == "_target_" and isinstance(v, str) else with_current_targets(v))
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [with_current_targets(v) for v in tree]
    return tree
