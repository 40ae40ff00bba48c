"""Every trial's optimizer step after one fused backward: one stacked update where it can, else one per trial.

The trials' optimizers are stock PyTorch ones on views of the stacked weights (stack.py), so
`optimizer.step()` per trial is always right, but for K trials it is K x (parameters) x (a few)
small tensor ops a batch. When every trial uses plain `torch.optim.SGD` (the course's optimizer),
`StackedSGD` does the same arithmetic as `torch.optim.sgd._single_tensor_sgd` once over the
stacked tensors, with each trial's lr, momentum, dampening and weight decay as a (K, 1, ...)
column read from its param group at every step (so schedulers, OneCycleLR's momentum included,
act as usual). Each trial's momentum buffers stay in its optimizer's state, as views of one
stacked buffer, so checkpoints and `resume=` see exactly a single run's optimizer state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from runner.fused.stack import StackedModels


def step_optimizers(stack: StackedModels, trials: list[Any]) -> None:
    """Clip each trial's gradient as its config says, then step each trial's optimizer (after backward)."""
    clipping = any(trial.grad_clip is not None for trial in trials)
    sgd = StackedSGD.of(stack, [trial.optimizer for trial in trials])
    if clipping or sgd is None:
        stack.hand_out_grads()
    for trial in trials:
        if trial.grad_clip is not None:
            nn.utils.clip_grad_norm_(trial.model.parameters(), trial.grad_clip)
    if sgd is not None:
        sgd.step()
        return
    for trial in trials:
        trial.optimizer.step()


def _plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """A stock SGD with one param group and nothing hooked into its step: what StackedSGD reproduces."""
    from torch.optim import optimizer as optim_module

    if type(optimizer) is not torch.optim.SGD or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    # A tensor lr (the captured step's, runner/capture/plan.py) stays with the optimizer's own step:
    # StackedSGD.step builds its options tensor from the param groups on the host, which no CUDA graph may hold.
    if not all(isinstance(group[key], (int, float)) for key in ("lr", "momentum", "dampening", "weight_decay")):
        return False
    hooked = (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
              or optim_module._global_optimizer_pre_hooks or optim_module._global_optimizer_post_hooks)
    return not (hooked or group["maximize"] or group["differentiable"] or group.get("fused"))


class StackedSGD:
    """K trials' `torch.optim.SGD` steps as one update of the stacked weights (module docstring)."""

    def __init__(self, stack: StackedModels, optimizers: list[torch.optim.SGD]) -> None:
        self.stack, self.optimizers = stack, optimizers
        self.weights = list(stack.params.values())  # the stacked tensors this was built for (a restack replaces them)
        # each trial's Parameter object per stacked name: its optimizer's state is keyed on it
        self.params = [dict(model.named_parameters()) for model in stack.models]
        self.buffers: dict[str, torch.Tensor] = {}
        self._restack_buffers()

    def built_for(self, stack: StackedModels, optimizers: list[torch.optim.Optimizer]) -> bool:
        return (len(optimizers) == len(self.optimizers) and all(a is b for a, b in zip(optimizers, self.optimizers))
                and all(a is b for a, b in zip(stack.params.values(), self.weights)))

    @classmethod
    def of(cls, stack: StackedModels, optimizers: list[torch.optim.Optimizer]) -> StackedSGD | None:
        """This stack's StackedSGD for these optimizers (kept on the stack, rebuilt after a restack), or None."""
        cached = stack.update_cache
        if isinstance(cached, cls) and cached.built_for(stack, optimizers):
            return cached
        groups = [o.param_groups[0] for o in optimizers]
        if not (all(_plain_sgd(o) for o in optimizers) and len({g["nesterov"] for g in groups}) == 1
                and len({g["momentum"] == 0 for g in groups}) == 1):
            stack.update_cache = None
            return None
        stack.update_cache = cls(stack, optimizers)  # type: ignore[arg-type]
        return stack.update_cache

    def _restack_buffers(self) -> None:
        """Gather the trials' momentum buffers into one stacked buffer per weight; point their state at its slices."""
        self.buffers = {}
        for name, weight in self.stack.params.items():
            states = [o.state.get(params[name], {}) for o, params in zip(self.optimizers, self.params)]
            found = [s.get("momentum_buffer") for s in states]
            if any(b is None for b in found):
                continue  # no step yet: the first step makes them
            self.buffers[name] = self._adopt(name, torch.empty_like(weight).copy_(torch.stack(found)))

    def _adopt(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        for k, (o, params) in enumerate(zip(self.optimizers, self.params)):
            o.state[params[name]]["momentum_buffer"] = stacked[k]
        return stacked

    @torch.no_grad()
    def step(self) -> None:
        """`_single_tensor_sgd` of every trial at once, each with its own group's current options."""
        groups = [o.param_groups[0] for o in self.optimizers]
        weight = self.stack.params[self.stack.names[0]]
        options = torch.tensor([[g["lr"], g["momentum"], g["dampening"], g["weight_decay"]] for g in groups],
                               dtype=weight.dtype, device=weight.device).T
        neg_lr, momentum, keep, decay = -options[0], options[1], 1 - options[2], options[3]
        use_momentum, nesterov = groups[0]["momentum"] != 0, groups[0]["nesterov"]
        any_decay = any(g["weight_decay"] != 0 for g in groups)
        for name, weight in self.stack.params.items():
            grad = weight.grad
            if grad is None:
                continue
            column = (-1,) + (1,) * (weight.dim() - 1)  # one value per trial, broadcast over its slice
            if any_decay:
                grad = grad.addcmul(weight, decay.view(column))
            if use_momentum:
                buffer = self.buffers.get(name)
                if buffer is None:
                    buffer = self.buffers[name] = self._adopt(name, grad.detach().clone())
                else:
                    buffer.mul_(momentum.view(column)).addcmul_(grad, keep.view(column))
                grad = grad.addcmul(buffer, momentum.view(column)) if nesterov else buffer
            weight.addcmul_(grad, neg_lr.view(column))
        for o in self.optimizers:
            o._opt_called = True  # type: ignore[attr-defined]  # what the lr scheduler's step wrapper records
