"""The training step captured once as a CUDA graph and replayed per batch (compute.cuda_graph).

On a GPU most of a small model's step is kernel launches; a graph replays them all in one call.
`plan_step` decides, once per run, whether the run is eligible (else it says why in one log line
and in summary.json, and the run trains eagerly as before) and returns the run's batch source
for the one epoch loop (runner/run/epoch.py): a `CapturedEpochs`, or the eager `ShuffledBatches`.

What a captured epoch does, and why it is the eager epoch's equivalent:
- The permutation is drawn exactly as the eager path draws it (data/splits.py ResidentSplit:
  `torch.randperm` on the host generator, once per epoch, then moved to the device); per step
  only a device-to-device copy of the next slice into the static index buffer precedes a replay.
- The graph holds the gather from the resident uint8 data, augmentation (its randomness comes
  from the CUDA generator, whose graph-safe offsets advance per replay as eager calls would),
  normalisation and the one step of runner/run/step.py, including the loss/accuracy totals.
- The learning rate is a device tensor in each param group, so a scheduler stepped outside the
  graph (per batch or per epoch, warm-up included) writes it in place and the graph reads it.
- The run's first step runs eagerly (it creates the optimizer's state: momentum, Adam moments,
  whose first-step form differs); warm-up steps for the capture run on a side stream and are
  undone (parameters, buffers, optimizer state, totals, RNG), so they change nothing.
- The last partial batch of an epoch runs eagerly: every image is seen once per epoch.
- The first replay is checked against the eager step from the same state (runner/capture/check.py);
  a capture that fails or a replay that differs leaves the run eager, saying why
  (runner/capture/graphed_step.py, the mechanics shared with a fused group).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from data.augment import Compose, RandomCrop, RandomHorizontalFlip
from data.splits import ResidentSplit
from runner.capture.cuda_graph import torch_too_old
from runner.capture.graphed_step import CapturedBatches, check_fields
from runner.config.schema import switch
from runner.run.epoch import BatchSource, ShuffledBatches
from runner.run.setup import RunData
from runner.run.step import SingleLearner, Totals, train_step

log = logging.getLogger("runner")

GRAPH_SAFE_AUGMENT = (nn.Identity, RandomHorizontalFlip, RandomCrop, Compose)  # device-side randomness only
FUSED_SGD = (torch.optim.SGD,)  # tensor lr in a graph: SGD's fused kernel (its foreach path calls .item())
CAPTURABLE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam)


def why_not_captured(cfg: DictConfig, data: RunData, optimizer: torch.optim.Optimizer, scheduler: Any,
                     adversary: Any, graph: bool = True) -> str | None:
    """None if the run's step can be captured; else why not, in one line (the fallback's log line).

    `graph=False` (tests only) skips the device check: the static-buffer path then runs on CPU.
    """
    device, split = data.device, data.splits["train"]
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
    for module in data.augment.modules():
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


class CapturedEpochs(CapturedBatches):
    """One model's epochs through static buffers, replaying the captured step per full batch."""

    def __init__(self, learner: SingleLearner, data: RunData, batch_size: int, summary: dict[str, Any],
                 graph: bool = True, strict: bool = False) -> None:
        super().__init__(data, [[summary]], graph, "captured", strict)
        self.learner = learner
        self.static_idx = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.totals = Totals(self.device)

    def draw_order(self) -> torch.Tensor:
        return torch.randperm(len(self.labels))  # exactly the eager path's draw (ResidentSplit.batches)

    def gathered_step(self, idx: torch.Tensor, cache_casts: bool = True) -> None:
        """Gather, augment, normalise, step: the work the graph holds."""
        x = self.data.model_input(self.data.augment(self.images[idx]))
        train_step(self.learner, x, self.labels[idx], self.totals, cache_casts)

    def live(self) -> list[torch.Tensor]:
        model = self.learner.model
        return [*model.parameters(), *model.buffers(), self.totals.loss_sum, self.totals.correct,
                *optimizer_tensors([self.learner.optimizer])]

    def checked(self) -> list[torch.Tensor]:
        model = self.learner.model
        return [self.totals.loss_sum, *model.parameters(), *model.buffers()]


def plan_step(cfg: DictConfig, data: RunData, learner: SingleLearner, adversary: Any, summary: dict[str, Any],
              graph: bool = True) -> BatchSource:
    """The run's batch source: the captured step's, or the eager `ShuffledBatches` (with one log
    line saying why not captured); fills summary's step fields.

    A per-epoch scheduler stays the loop's to step (outside the graph, like a per-step one here).
    `graph=False` (tests only): the captured path's static buffers without the graph, on any device.
    """
    reason = why_not_captured(cfg, data, learner.optimizer, learner.scheduler, adversary, graph)
    summary.update(step_path="eager" if reason else "captured", capture_s=None, step_fallback=reason,
                   **check_fields(None, 0))
    if reason is not None:
        log.info("eager step: %s", reason)
        return ShuffledBatches(data, int(cfg.batch_size), adversary)
    use_tensor_lr(learner.optimizer, data.device)
    strict = switch(cfg.compute.get("cuda_graph", "auto")) == "true"
    return CapturedEpochs(learner, data, int(cfg.batch_size), summary, graph, strict)
