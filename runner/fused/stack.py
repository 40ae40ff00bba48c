"""K models of one architecture as stacked parameters, one vmapped forward, per-trial views.

Each stacked parameter P has shape (K, ...). Every trial keeps its own `nn.Module` whose
`nn.Parameter`s are views of P[k] (same storage), so a stock PyTorch optimizer built on that
module's parameters updates P in place, an `evaluate` or `state_dict()` of the module sees the
trial's weights, and the checkpoint is exactly a single run's. One backward through the sum of
the trials' losses fills P.grad; trial k's gradients are the view P.grad[k] (trials share no
arithmetic, so each slice is that trial's own gradient).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from common.errors import ConfigError


class NotFusible(ConfigError):
    """This group's model can't be stacked; its trials run one after another instead."""


def fusible(model: nn.Module) -> str | None:
    """None if `model` can be stacked; else why not (one line)."""
    if not any(p.requires_grad for p in model.parameters()):
        return f"{type(model).__name__} has no trainable parameters"
    if any(not p.requires_grad for p in model.parameters()):
        return f"{type(model).__name__} has frozen parameters (fine-tuning)"
    return None


class StackedModels:
    """The trials' models with their parameters stacked; `forward(x)` runs all K in one vmapped call."""

    def __init__(self, models: list[nn.Module]) -> None:
        self.models = list(models)
        self.names = [name for name, _ in models[0].named_parameters()]
        self._base = copy.deepcopy(models[0]).to("meta")  # the architecture only; weights come from P
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}  # batch norm's running statistics, one slice per trial
        self._restack(self.models)

    def _restack(self, models: list[nn.Module]) -> None:
        """Stack `models`' current weights into fresh P and point each model's Parameters at its slice.

        The Parameter objects stay the same (only `.data` moves), so optimizers keyed on them keep
        their state (momentum, Adam moments) across a restack.
        """
        stacked, buffers = stack_module_state(models)
        self.params = {name: stacked[name].detach().clone().requires_grad_(True) for name in self.names}
        self.buffers = {name: b.clone() for name, b in buffers.items()}
        for k, model in enumerate(models):
            for name, param in model.named_parameters():
                param.data = self.params[name].data[k]
            for name, buffer in model.named_buffers():  # in-place running-stat updates land in the stack
                buffer.data = self.buffers[name][k]
        self.models = list(models)

    def keep(self, indices: list[int]) -> None:
        """Drop every trial not in `indices` (a diverged or finished one) from the stack."""
        self._restack([self.models[i] for i in indices])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (K, B, ...) one batch per trial -> logits (K, B, classes)."""
        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self._base, (params, buffers), (xb,))

        # Dropout draws independently per trial ("different"): not the single run's mask.
        # Batch norm updates each trial's slice of the stacked running statistics in place.
        return vmap(one, randomness="different")(self.params, self.buffers, x)

    def train(self, mode: bool = True) -> None:
        self._base.train(mode)
        for model in self.models:
            model.train(mode)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def hand_out_grads(self) -> None:
        """After backward: each trial's Parameter.grad is its slice of P.grad (a view, so clipping acts on P.grad)."""
        for k, model in enumerate(self.models):
            for name, param in model.named_parameters():
                grad = self.params[name].grad
                param.grad = None if grad is None else grad[k]
