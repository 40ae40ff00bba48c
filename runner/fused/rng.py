"""Per-trial random streams: each trial draws from its own saved torch RNG state.

A single run seeds torch once and then draws its initial weights, each epoch's shuffle and each
batch's augmentation from that one stream in that order. A fused trial keeps the state its stream
was left in and swaps it in around its own draws, so it sees the same weights, batches and flips
as the single run with its seed.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


class TrialRng:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.state = self._now()

    def _now(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Draw from this trial's stream inside the block; the global stream is put back after."""
        outside = self._now()
        self._set(self.state)
        try:
            yield
        finally:
            self.state = self._now()
            self._set(outside)

    def _set(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] is not None:
            torch.cuda.set_rng_state(state["cuda"], self.device)
