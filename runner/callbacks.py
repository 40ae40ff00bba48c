"""Hydra callbacks: collect a sweep's results into tables when it ends."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from common.errors import ConfigError

log = logging.getLogger("runner.collect")


class CollectOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.collect import collect_and_report

        try:
            collect_and_report([config.hydra.sweep.dir])
        except ConfigError as e:  # e.g. every job of the grid was refused: nothing to tabulate
            log.warning("%s", e)
