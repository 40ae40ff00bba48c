"""K models of one architecture as stacked parameters, one vmapped forward, per-trial views.

Each stacked parameter P has shape (K, ...). Every trial keeps its own `nn.Module` whose
`nn.Parameter`s are views of P[k] (same storage), so a stock PyTorch optimizer built on that
module's parameters updates P in place, an `evaluate` or `state_dict()` of the module sees the
trial's weights, and the checkpoint is exactly a single run's. One backward through the sum of
the trials' losses fills P.grad; trial k's gradients are the view P.grad[k] (trials share no
arithmetic, so each slice is that trial's own gradient).

With `channels_last` (compute.channels_last, as a single run's model and batches), each trial's
4-D weights are channels-last views and the stacked images are laid out (B, H, W, K, C): `vmap`
turns a stacked convolution into one grouped convolution over (B, K*C, H, W), and these layouts
make its input and weight channels-last without a copy, so oneDNN takes its NHWC kernels, much
faster on a CPU than its NCHW grouped ones (bench/fused_step.py measures the fused step).
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

    def __init__(self, models: list[nn.Module], channels_last: bool = False) -> None:
        self.models = list(models)
        self.channels_last = channels_last
        self.names = [name for name, _ in models[0].named_parameters()]
        modules = list(models[0].named_modules())  # which weights get a layout of their own (_laid_out)
        self._linear = {f"{n}.weight" if n else "weight" for n, m in modules if isinstance(m, nn.Linear)}
        self._conv = {f"{n}.weight" if n else "weight" for n, m in modules if isinstance(m, nn.Conv2d)}
        self._base = copy.deepcopy(models[0]).to("meta")  # the architecture only; weights come from P
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}  # batch norm's running statistics, one slice per trial
        self.update_cache: object = None  # runner/fused/update.py's stacked optimizer state
        self._restack(self.models)

    def _restack(self, models: list[nn.Module]) -> None:
        """Stack `models`' current weights into fresh P and point each model's Parameters at its slice.

        The Parameter objects stay the same (only `.data` moves), so optimizers keyed on them keep
        their state (momentum, Adam moments) across a restack.
        """
        stacked, buffers = stack_module_state(models)
        self.params = {name: self._laid_out(name, stacked[name].detach()).requires_grad_(True) for name in self.names}
        self.buffers = {name: b.clone() for name, b in buffers.items()}
        for k, model in enumerate(models):
            for name, param in model.named_parameters():
                param.data = self.params[name].data[k]
            for name, buffer in model.named_buffers():  # in-place running-stat updates land in the stack
                buffer.data = self.buffers[name][k]
        self.models = list(models)

    def _laid_out(self, name: str, stacked: torch.Tensor) -> torch.Tensor:
        """A copy of a stacked parameter in the layout its gradient comes back in from the vmapped backward.

        A stacked linear weight (K, out, in) is stored as (K, in, out): its gradient is computed in that
        layout, and a parameter of the same layout takes it as is instead of copying it over (autograd's
        AccumulateGrad). A stacked conv weight (K, O, C, kh, kw) is stored as (K, O, kh, kw, C) with
        `channels_last` (module docstring).
        """
        if name in self._linear and stacked.dim() == 3:
            return stacked.transpose(1, 2).contiguous().transpose(1, 2)
        if self.channels_last and name in self._conv and stacked.dim() == 5:
            return stacked.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        return stacked.clone()

    def stack_inputs(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """The trials' batches (each (B, C, H, W)) as one (K, B, C, H, W) input, in the layout `forward` wants."""
        if not (self.channels_last and xs[0].dim() == 4):
            return torch.stack(xs)
        return torch.stack([xk.permute(0, 2, 3, 1) for xk in xs], dim=3).permute(3, 0, 4, 1, 2)

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


class OwnStorage:
    """What a trial's checkpoint saves: `state_dict()` of a module or optimizer whose tensors are views of the stack.

    torch.save writes a view's whole storage, so each trial's checkpoint would hold all K trials'
    weights; this copies each such tensor out (channels-last where it is, else contiguous, as a
    single run's), and leaves tensors with storage of their own as they are.
    """

    def __init__(self, owner: nn.Module | torch.optim.Optimizer) -> None:
        self.owner = owner

    def state_dict(self) -> dict:
        return _own_copies(self.owner.state_dict())


def _own_copies(value):
    if isinstance(value, torch.Tensor):
        if value.untyped_storage().nbytes() <= value.numel() * value.element_size():
            return value
        nhwc = value.dim() == 4 and value.is_contiguous(memory_format=torch.channels_last) and not value.is_contiguous()
        return value.clone(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    if isinstance(value, dict):  # a module's state_dict is an OrderedDict with _metadata: keep both
        copied = copy.copy(value)
        for key, item in value.items():
            copied[key] = _own_copies(item)
        return copied
    if isinstance(value, (list, tuple)):
        return type(value)(_own_copies(item) for item in value)
    return value
