"""Recording one CUDA graph so that a failed capture leaves a clean eager run (runner/capture/plan.py).

`torch.cuda.graph` as a context manager leaves a failed capture half done: `capture_end` throws
before the allocator's private pool and the generator's capture state are released, the thread
stays on the capture stream, and the error it raises ("operation failed due to a previous error
during capture") hides the cause. `record` captures on the run's device, always ends the
capture, and on failure releases the pool, gives the CUDA generator back its pre-capture state
and raises `CaptureError` naming the first error. A graph that recorded nothing (its work went
to another device's stream) is a failed capture too, not a graph whose replays do nothing.
"""

from __future__ import annotations

import re
import warnings
from typing import Callable

import torch

# Schedulers write a tensor lr in place from 2.4, and without a per-step .item() from 2.5:
# before that a graph keeps the capture-time lr, or the capture fails.
MIN_TORCH = (2, 5)
EMPTY_GRAPH = "CUDA Graph is empty"
PREVIOUS_ERROR = "previous error during capture"


class CaptureError(RuntimeError):
    """A capture that failed; its message is the cause, in one line."""


def torch_too_old(version: str = torch.__version__) -> str | None:
    """Why this torch can't run a captured step (one line), or None."""
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < MIN_TORCH:
        return (f"torch {version} keeps the capture-time learning rate in a graph "
                f"(a captured step needs torch {'.'.join(map(str, MIN_TORCH))} or later)")
    return None


def first_cause(error: BaseException) -> str:
    """The error a capture failed on, in one line: past CUDA's "previous error during capture" to its cause."""
    while PREVIOUS_ERROR in str(error) and error.__context__ is not None:
        error = error.__context__
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def record(body: Callable[[], None], device: torch.device) -> torch.cuda.CUDAGraph:
    """`body()` captured on `device` (on a side stream of that device) into a new graph; CaptureError if it fails."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    pool = torch.cuda.graph_pool_handle()
    generator = torch.cuda.default_generators[index]
    rng = torch.cuda.get_rng_state(index)
    failure: BaseException | None = None
    with torch.cuda.device(index):
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        torch.cuda.synchronize()
        with torch.cuda.stream(stream), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                graph.capture_begin(pool=pool)
                body()
            except Exception as e:  # a host sync, a CPU tensor, an op that can't be captured
                failure = e
            finally:
                try:  # always: a stream left capturing fails every later CUDA call of the thread
                    graph.capture_end()
                except Exception as e:
                    failure = failure or e
        torch.cuda.current_stream().wait_stream(stream)
        for w in caught:  # the others were the step's own: pass them on
            if EMPTY_GRAPH not in str(w.message):
                warnings.warn(w.message, w.category, stacklevel=2)
        if failure is None and any(EMPTY_GRAPH in str(w.message) for w in caught):
            failure = CaptureError("the graph is empty (its work ran on another device's stream)")
        if failure is not None:
            _clean_up(graph, pool, index, generator, rng)
            raise CaptureError(first_cause(failure)) from failure
        torch.cuda.synchronize()
    return graph


def _clean_up(graph: torch.cuda.CUDAGraph, pool: tuple[int, int], index: int, generator: torch.Generator,
              rng: torch.Tensor) -> None:
    """Release what a failed capture holds; each part on its own, so one that is already gone stops nothing."""
    try:
        graph.pool()  # answers only after a capture that ended: then the graph releases its pool itself
        ended = True
    except RuntimeError:
        ended = False
    if ended:
        graph.reset()
    else:  # ended in error: the allocator still routes to the pool and holds it
        for release in (torch._C._cuda_endAllocateToPool, torch._C._cuda_releasePool):
            try:
                release(index, pool)
            except RuntimeError:
                pass
    try:  # a fresh generator state: the failed capture's may still count offsets as inside a graph
        generator.graphsafe_set_state(generator.clone_state())
    except (AttributeError, RuntimeError):
        pass
    torch.cuda.set_rng_state(rng, index)  # a capture runs no kernels: the eager run goes on from here
    torch.cuda.synchronize(index)
