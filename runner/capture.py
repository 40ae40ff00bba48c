"""The training step captured once as a CUDA graph and replayed per batch (compute.cuda_graph).

On a GPU most of a small model's step is kernel launches; a graph replays them all in one call.
`plan_step` decides, once per run, whether the run is eligible (else it says why in one log line
and in summary.json, and the run trains eagerly as before) and returns a `CapturedEpochs`.

What a captured epoch does, and why it is the eager epoch's equivalent:
- The permutation is drawn exactly as the eager path draws it (data/splits.py ResidentSplit:
  `torch.randperm` on the host generator, once per epoch, then moved to the device); per step
  only a device-to-device copy of the next slice into the static index buffer precedes a replay.
- The graph holds the gather from the resident uint8 data, augmentation (its randomness comes
  from the CUDA generator, whose graph-safe offsets advance per replay as eager calls would),
  normalisation and the one step of runner/step.py, including the loss/accuracy totals.
- The learning rate is a device tensor in each param group, so a scheduler stepped outside the
  graph (per batch or per epoch, warm-up included) writes it in place and the graph reads it.
- The run's first step runs eagerly (it creates the optimizer's state: momentum, Adam moments,
  whose first-step form differs); warm-up steps for the capture run on a side stream and are
  undone (parameters, buffers, optimizer state, totals, RNG), so they change nothing.
- The last partial batch of an epoch runs eagerly: every image is seen once per epoch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import nn

from common.errors import ConfigError
from data.augment import Compose, RandomCrop, RandomHorizontalFlip
from data.splits import ResidentSplit
from runner.capture_check import StepCheck, compare_steps
from runner.compute import to_model_input
from runner.config import switch
from runner.cuda_graph import first_cause, record, torch_too_old
from runner.step import SingleLearner, Totals, train_step

log = logging.getLogger("runner")

WARMUP_STEPS = 3  # PyTorch's recipe: a few eager iterations on a side stream before capture
GRAPH_SAFE_AUGMENT = (nn.Identity, RandomHorizontalFlip, RandomCrop, Compose)  # device-side randomness only
FUSED_SGD = (torch.optim.SGD,)  # tensor lr in a graph: SGD's fused kernel (its foreach path calls .item())
CAPTURABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam)


def why_not_captured(cfg: DictConfig, device: torch.device, split: Any, optimizer: torch.optim.Optimizer,
                     scheduler: Any, augment: nn.Module, adversary: Any, graph: bool = True) -> str | None:
    """None if the run's step can be captured; else why not, in one line (the fallback's log line).

    `graph=False` (tests only) skips the device check: the static-buffer path then runs on CPU.
    """
    if switch(cfg.compute.get("cuda_graph", "auto")) == "false":
        return "compute.cuda_graph=false"
    too_old = torch_too_old()
    if too_old is not None:
        return too_old
    if graph and device.type != "cuda":
        return f"the run trains on {device.type}; a CUDA graph needs a GPU"
    # device types, not devices: the data placed on "cuda" reports "cuda:0"
    if not isinstance(split, ResidentSplit) or split.images.device.type != device.type:
        return "the training data is not resident on the training device (streamed, or compute.data_on_device)"
    if len(split.labels) < cfg.batch_size:
        return f"the training set ({len(split.labels)} images) is smaller than one batch ({cfg.batch_size})"
    if adversary is not None:
        return "adversarial training runs an attack per batch (conf/adversary)"
    if cfg.compute.compile:
        return "compute.compile=true (torch.compile makes its own graphs: pick one of the two)"
    for module in augment.modules():
        if not isinstance(module, GRAPH_SAFE_AUGMENT):
            return (f"augmentation {type(module).__name__} draws its randomness on the host per image, "
                    "which a graph would replay unchanged")
    if not isinstance(optimizer, FUSED_SGD + CAPTURABLE):
        return f"optimizer {type(optimizer).__name__} has no graph-safe step in PyTorch"
    if any(group.get("differentiable") for group in optimizer.param_groups):
        return "optimizer differentiable=true"
    for sched in [scheduler, *getattr(scheduler, "_schedulers", [])]:
        if getattr(sched, "cycle_momentum", False):
            return (f"scheduler {type(sched).__name__} cycles momentum as a Python number a graph would freeze; "
                    "add +scheduler.cycle_momentum=false")
    return None


def use_tensor_lr(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Learning rate as a device tensor a graph reads; the graph-safe step where PyTorch needs a flag.

    On CUDA the flags are the graph's also without the graph (tests/test_capture_cuda.py compares
    the two exactly); on a CPU, which has no capturable optimizers, SGD's fused kernel only.
    Checkpoints keep the eager form (a float lr, the flags as built), so `resume=` and
    `python -m runner.eval` read them as any run's.
    """
    graph = device.type == "cuda"
    built = [{k: group.get(k) for k in ("fused", "foreach", "capturable")} for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)  # float32: what the fused kernels read
        if isinstance(optimizer, FUSED_SGD):  # also without the graph: the CPU tests then run the kernel it replays
            group["fused"], group["foreach"] = True, False
        elif graph:
            group["capturable"] = True
    if graph:
        for state in optimizer.state.values():  # a resumed eager Adam keeps `step` on the host
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].to(device, torch.float32)

    def eager_form(_: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
        for saved, flags in zip(state_dict["param_groups"], built):
            saved["lr"] = float(saved["lr"])
            saved.update(flags)

    optimizer.register_state_dict_post_hook(eager_form)


def optimizer_tensors(optimizers: list[torch.optim.Optimizer]) -> list[torch.Tensor]:
    """Every tensor an optimizer step changes or reads per step: its state and tensor learning rates."""
    out = [v for opt in optimizers for state in opt.state.values() for v in state.values()
           if isinstance(v, torch.Tensor)]
    return out + [g["lr"] for opt in optimizers for g in opt.param_groups if isinstance(g["lr"], torch.Tensor)]


class GraphedStep:
    """A step (`body`) run eagerly the first time, then captured once, checked, and replayed (`step()`).

    A subclass holds the static buffers: `body(cache_casts)` is the step on them, `live()` every
    tensor it changes (weights, buffers, optimizer state, totals): the warm-up before capture is
    undone on exactly these, and on the RNG; `checked()` is what the self-check compares (the
    loss sum, then every parameter and buffer). The first replay is the self-check
    (runner/capture_check.py): replayed, undone, then taken eagerly and compared, so the run
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
                               **_check_fields(result, k))
        log.info("captured the training step as a CUDA graph in %.2f s; its replay equals the eager step "
                 "(loss %.2g, update %.2g apart)", capture_s, max(result.loss_diff), max(result.update_diff))

    def _fall_back(self, reason: str, result: StepCheck | None) -> None:
        self.replay, self.failed = None, True
        for k, summaries in enumerate(self.summaries):
            for summary in summaries:
                summary.update(step_path=self.path.replace("captured", "eager"), capture_s=None,
                               step_fallback=reason, **_check_fields(result, k))
        if self.strict:
            raise CaptureFailed(f"compute.cuda_graph=true: {reason}; use compute.cuda_graph=auto "
                                "(falls back to the eager step) or false")
        log.warning("eager step: %s", reason)


class CaptureFailed(ConfigError):
    """compute.cuda_graph=true and the captured step failed (capture or check): the run fails."""


def _check_fields(result: StepCheck | None, member: int) -> dict[str, Any]:
    """summary.json's record of the self-check: passed/failed and the relative differences (None: no check ran)."""
    if result is None:
        return {"step_check": None, "step_check_loss": None, "step_check_update": None}
    return {"step_check": "passed" if result.passed else "failed",
            "step_check_loss": float(f"{result.loss_diff[member]:.3g}"),
            "step_check_update": float(f"{result.update_diff[member]:.3g}")}


class CapturedEpochs(GraphedStep):
    """Train epochs of one model through static buffers, replaying the captured step per full batch."""

    def __init__(self, learner: SingleLearner, split: ResidentSplit, batch_size: int, augment: nn.Module,
                 normalize: nn.Module, amp_dtype: torch.dtype | None, channels_last: bool,
                 summary: dict[str, Any], graph: bool = True, strict: bool = False) -> None:
        super().__init__(split.images.device, [[summary]], graph, "captured", strict)
        self.learner, self.augment, self.normalize = learner, augment, normalize
        self.amp_dtype, self.channels_last = amp_dtype, channels_last
        self.images, self.labels = split.images, split.labels
        self.static_idx = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.totals = Totals(self.device)

    def train_epoch(self, progress: Any) -> dict[str, float]:
        self.learner.model.train()
        self.totals.reset()
        n, batch = len(self.labels), len(self.static_idx)
        order = torch.randperm(n).to(self.device)  # exactly the eager path's draw (ResidentSplit.batches)
        full = n // batch
        with self.on_device():
            for i in range(full):
                self.static_idx.copy_(order[i * batch:(i + 1) * batch], non_blocking=True)
                self.step()
                self.learner.after_step()
                progress.update(1)
            if n % batch:  # the last partial batch, eagerly: every image is seen once per epoch
                self._gathered_step(order[full * batch:])
                self.learner.after_step()
                progress.update(1)
        self.totals.seen = n
        return self.totals.rows()[0]

    def body(self, cache_casts: bool) -> None:
        self._gathered_step(self.static_idx, cache_casts)

    def _gathered_step(self, idx: torch.Tensor, cache_casts: bool = True) -> None:
        """Gather, augment, normalise, step: the work the graph holds."""
        x = to_model_input(self.augment(self.images[idx]), self.normalize, self.channels_last)
        train_step(self.learner, x, self.labels[idx], self.totals, self.amp_dtype, cache_casts)

    def live(self) -> list[torch.Tensor]:
        model = self.learner.model
        return [*model.parameters(), *model.buffers(), self.totals.loss_sum, self.totals.correct,
                *optimizer_tensors([self.learner.optimizer])]

    def checked(self) -> list[torch.Tensor]:
        model = self.learner.model
        return [self.totals.loss_sum, *model.parameters(), *model.buffers()]


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


def plan_step(cfg: DictConfig, device: torch.device, split: Any, model: nn.Module, loss_fn: nn.Module,
              optimizer: torch.optim.Optimizer, scheduler: Any, interval: str, augment: nn.Module,
              normalize: nn.Module, amp_dtype: torch.dtype | None, channels_last: bool, adversary: Any,
              summary: dict[str, Any], graph: bool = True) -> CapturedEpochs | None:
    """The captured path for this run, or None (eager, with one log line saying why); fills summary's fields.

    A per-epoch scheduler stays the loop's to step (outside the graph, like a per-step one here).
    """
    learner = SingleLearner(model, loss_fn, optimizer, scheduler if interval == "step" else None, cfg.grad_clip)
    reason = why_not_captured(cfg, device, split, learner.optimizer, scheduler, augment, adversary, graph)
    summary.update(step_path="eager" if reason else "captured", capture_s=None, step_fallback=reason,
                   step_check=None, step_check_loss=None, step_check_update=None)
    if reason is not None:
        log.info("eager step: %s", reason)
        return None
    use_tensor_lr(learner.optimizer, device)
    strict = switch(cfg.compute.get("cuda_graph", "auto")) == "true"
    return CapturedEpochs(learner, split, int(cfg.batch_size), augment, normalize, amp_dtype, channels_last,
                          summary, graph, strict)
