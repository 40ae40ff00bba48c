"""A training step captured once as a CUDA graph, checked, and replayed: the part shared by a run
(runner/capture/plan.py) and a fused group (runner/fused/capture.py).

A subclass holds the static buffers and says what the step is (`body`), what it changes
(`live`) and what the self-check compares (`checked`); this class runs the first step eagerly,
then warms up (undone), captures (runner/capture/cuda_graph.py), checks the first replay against the
eager step (runner/capture/check.py), and replays from then on, or falls back to eager.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Any, Callable, Iterator

import torch

from common.errors import ConfigError
from runner.capture.check import StepCheck, compare_steps
from runner.capture.cuda_graph import first_cause, record
from runner.run.epoch import BatchSource
from runner.run.setup import RunData
from runner.run.step import Learner, Totals

log = logging.getLogger("runner")

WARMUP_STEPS = 3  # PyTorch's recipe: a few eager iterations on a side stream before capture


class GraphedStep:
    """A step (`body`) run eagerly the first time, then captured once, checked, and replayed (`step()`).

    A subclass holds the static buffers: `body(cache_casts)` is the step on them, `live()` every
    tensor it changes (weights, buffers, optimizer state, totals): the warm-up before capture is
    undone on exactly these, and on the RNG; `checked()` is what the self-check compares (the
    loss sum, then every parameter and buffer). The first replay is the self-check
    (runner/capture/check.py): replayed, undone, then taken eagerly and compared, so the run
    keeps the eager step's result either way. A capture that fails, or a replay that differs,
    leaves the run eager from then on (`strict`, compute.cuda_graph=true: the run fails instead),
    with its reason in `summaries` (per member, each run's summary.json dicts). A base class,
    not a callback: no reference cycle keeps a finished run's model and graph memory alive in a sweep.
    `graph=False` (tests): the body itself stands in for the replay, on any device.
    """

    def __init__(self, device: torch.device, summaries: list[list[dict[str, Any]]], graph: bool, path: str,
                 strict: bool = False) -> None:
        self.device, self.summaries, self.graph, self.path, self.strict = device, summaries, graph, path, strict
        self.replay: Callable[[], None] | None = None
        self.pending = True  # a capture and its check are still to come
        self.failed = False  # a capture or check failed: eager from then on
        self.steps = 0

    def body(self, cache_casts: bool) -> None:
        raise NotImplementedError

    def live(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def checked(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def member_count(self) -> int | None:
        """K for a fused group (its tensors are (K, ...)), None for one model."""
        return None

    def member_names(self) -> list[str] | None:
        """How the check's failure line names a fused group's trials."""
        return None

    def on_device(self) -> Any:
        """The run's device made current: a graph captures on the current device's streams (cuda:N)."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def step(self) -> None:
        if self.replay is not None:
            self.replay()
        elif self.pending and self.steps > 0:
            self._capture_and_check()
        else:  # the run's first step (it creates the optimizer state), or no graph
            self.body(True)
        self.steps += 1

    def warm_up(self) -> None:
        """WARMUP_STEPS eager steps (on a side stream on CUDA, as PyTorch's recipe asks), then
        everything they changed put back: the captured run trains the eager run's steps."""
        saved = _Snapshot(self.live(), self.device)
        try:
            if self.device.type != "cuda":  # the CPU test of the undo (tests/test_capture.py)
                for _ in range(WARMUP_STEPS):
                    self.body(False)
                return
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self.body(False)
            torch.cuda.current_stream(self.device).wait_stream(side)
        finally:
            saved.restore()

    def record(self) -> Callable[[], None]:
        """Warm up (undone) and capture the step; the replay (CaptureError if the capture fails)."""
        if not self.graph:
            return functools.partial(self.body, False)
        with self.on_device():
            self.warm_up()
            return record(functools.partial(self.body, False), self.device).replay

    def check(self, replay: Callable[[], None]) -> StepCheck:
        """Replay once, undo it, take the step eagerly from the same state, compare (module docstring)."""
        saved = _Snapshot(self.live(), self.device)
        before = [t.detach().clone() for t in self.checked()]
        failure = None
        try:
            replay()
            replayed = [t.detach().clone() for t in self.checked()]
        except Exception as e:  # a replay that raises is a failed check, not a failed run
            failure, replayed = f"the replay raised: {first_cause(e)}", before
        finally:
            saved.restore()
        self.body(True)
        result = compare_steps(before, replayed, self.checked(), self.member_count(), self.member_names())
        return StepCheck(result.loss_diff, result.update_diff, failure) if failure else result

    def _capture_and_check(self) -> None:
        """This step: captured and checked (its result is the eager step's), or eager if either fails."""
        self.pending = False
        t0 = time.perf_counter()
        try:
            replay = self.record()
        except Exception as e:  # a model with a host sync or a CPU op in its step: train eagerly
            self._fall_back(f"capture failed: {first_cause(e)}", None)
            self.body(True)
            return
        result = self.check(replay)
        if not result.passed:
            self._fall_back(f"the captured step failed its check: {result.reason}", result)
            return
        self.replay = replay
        capture_s = time.perf_counter() - t0
        for k, summaries in enumerate(self.summaries):
            for summary in summaries:  # a fused group recaptures when a trial leaves: the costs add up
                summary.update(capture_s=round((summary.get("capture_s") or 0.0) + capture_s, 3),
                               **check_fields(result, k))
        log.info("captured the training step as a CUDA graph in %.2f s; its replay equals the eager step "
                 "(loss %.2g, update %.2g apart)", capture_s, max(result.loss_diff), max(result.update_diff))

    def _fall_back(self, reason: str, result: StepCheck | None) -> None:
        self.replay, self.failed = None, True
        for k, summaries in enumerate(self.summaries):
            for summary in summaries:
                summary.update(step_path=self.path.replace("captured", "eager"), capture_s=None,
                               step_fallback=reason, **check_fields(result, k))
        if self.strict:
            raise CaptureFailed(f"compute.cuda_graph=true: {reason}; use compute.cuda_graph=auto "
                                "(falls back to the eager step) or false")
        log.warning("eager step: %s", reason)


class CapturedBatches(GraphedStep, BatchSource):
    """A captured step's batch source (runner/run/epoch.py): index slices of the resident training
    split, each full one copied into the static index buffer and replayed, the last partial one
    taken eagerly, so every image is seen once per epoch.

    A subclass says how an epoch's order is drawn (`draw_order`: (n,) for a run, (K, n) for a
    fused group, each exactly as its eager path draws it) and what one step on an index slice
    is (`gathered_step`: gather, augment, normalise, the one step; the graph holds exactly this).
    """

    static_idx: torch.Tensor
    learner: Learner
    totals: Totals

    def __init__(self, data: RunData, summaries: list[list[dict[str, Any]]], graph: bool, path: str,
                 strict: bool) -> None:
        split = data.splits["train"]  # resident on the training device (runner/capture/plan.py checks)
        GraphedStep.__init__(self, split.images.device, summaries, graph, path, strict)
        BatchSource.__init__(self, data)
        self.images, self.labels = split.images, split.labels

    def draw_order(self) -> torch.Tensor:
        raise NotImplementedError

    def gathered_step(self, idx: torch.Tensor, cache_casts: bool = True) -> None:
        raise NotImplementedError

    def start_epoch(self, learner: Learner) -> Totals:
        self.totals.reset()  # in place: a captured graph holds these very tensors
        return self.totals

    def batches(self) -> Iterator[torch.Tensor]:
        order = self.draw_order().to(self.device)
        batch = self.static_idx.shape[-1]
        with self.on_device():
            for start in range(0, order.shape[-1], batch):
                yield order[..., start:start + batch]

    def train_on(self, learner: Learner, idx: torch.Tensor) -> None:
        if idx.shape[-1] == self.static_idx.shape[-1]:
            self.static_idx.copy_(idx, non_blocking=True)
            self.step()
        else:  # the last partial batch, eagerly
            self.gathered_step(idx)
        self.totals.seen += idx.shape[-1]

    def body(self, cache_casts: bool) -> None:
        self.gathered_step(self.static_idx, cache_casts)


class CaptureFailed(ConfigError):
    """compute.cuda_graph=true and the captured step failed (capture or check): the run fails."""


def check_fields(result: StepCheck | None, member: int) -> dict[str, Any]:
    """summary.json's record of the self-check: passed/failed and the relative differences (None: no check ran)."""
    if result is None:
        return {"step_check": None, "step_check_loss": None, "step_check_update": None}
    return {"step_check": result.verdict,
            "step_check_loss": float(f"{result.loss_diff[member]:.3g}"),
            "step_check_update": float(f"{result.update_diff[member]:.3g}")}


class _Snapshot:
    """Copies of the live tensors and the RNG, put back in place (a graph holds these very tensors)."""

    def __init__(self, live: list[torch.Tensor], device: torch.device) -> None:
        self.pairs = [(t, t.detach().clone()) for t in live]
        self.device = device
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        with torch.no_grad():
            for live, saved in self.pairs:
                live.copy_(saved)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng, self.device)
