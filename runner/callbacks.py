"""Hydra callbacks: collect a sweep's results into tables when it ends."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class CollectOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.collect import collect_and_report

        collect_and_report([config.hydra.sweep.dir])
