"""Hydra callbacks: keep a sweep dir to one live sweep, and collect a sweep's results into tables when it ends."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from common.errors import ConfigError
from runner import locks

log = logging.getLogger("runner.collect")


class LockSweepDir(Callback):
    """Refuse (one line, exit 2) a sweep into a sweep dir another live sweep is using."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if locks.is_shared_sweep(config.hydra):
            return
        try:
            locks.acquire(config.hydra.sweep.dir)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None  # Hydra's callback runner swallows Exceptions, not SystemExit

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        locks.release(config.hydra.sweep.dir)


class CollectOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.collect import collect_and_report

        if locks.refused(config.hydra.sweep.dir):  # the dir belongs to another live sweep
            return
        if not os.path.isdir(config.hydra.sweep.dir):  # the sweep was refused before it made its folder
            return
        try:
            collect_and_report([config.hydra.sweep.dir])
        except ConfigError as e:  # e.g. every job of the grid was refused: nothing to tabulate
            log.warning("%s", e)
