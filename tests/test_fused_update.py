"""The fused step's speed-ups change nothing a trial computes or saves (on a CPU).

The stacked SGD update equals each trial's own `torch.optim.SGD.step()`; the channels-last
stacked layout gives each trial its own model's logits and gradients; a trial's checkpoint holds
its own tensors only, laid out as a single run's.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from models.lenet import LeNet
from runner.fused.stack import OwnStorage, StackedModels
from runner.fused.update import StackedSGD, step_optimizers


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


class _Trial:  # what step_optimizers reads of runner/fused/loop.py's Trial
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None = None) -> None:
        self.model, self.optimizer, self.grad_clip = model, optimizer, grad_clip


def _same_grads(stack: StackedModels, refs: list[nn.Module], generator: torch.Generator) -> None:
    """Give the stack and the reference models the same random gradients."""
    for name, weight in stack.params.items():
        grad = torch.randn(weight.shape, generator=generator)
        weight.grad = torch.empty_like(weight).copy_(grad)  # in the stacked weight's own layout
        for k, ref in enumerate(refs):
            ref.get_parameter(name).grad = grad[k].clone()


@pytest.mark.parametrize("options", [
    [dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.5, dampening=0.1, weight_decay=1e-3),
     dict(lr=0.02, momentum=0.8, weight_decay=5e-4)],
    [dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.03, momentum=0.7, nesterov=True, weight_decay=1e-2),
     dict(lr=0.01, momentum=0.9, nesterov=True)],
    [dict(lr=0.1), dict(lr=0.01, weight_decay=1e-2), dict(lr=0.001)],
], ids=["momentum", "nesterov", "plain"])
def test_stacked_sgd_equals_each_trials_own_sgd(options):
    torch.manual_seed(0)
    models = [small_net() for _ in options]
    refs = [copy.deepcopy(m) for m in models]
    stack = StackedModels(models, channels_last=True)
    optimizers = [torch.optim.SGD(m.parameters(), **o) for m, o in zip(models, options)]
    ref_optimizers = [torch.optim.SGD(m.parameters(), **o) for m, o in zip(refs, options)]
    trials = [_Trial(m, o) for m, o in zip(models, optimizers)]
    generator = torch.Generator().manual_seed(1)
    for step in range(6):
        if step == 2:  # a scheduler changes one trial's lr (and momentum, as OneCycleLR does)
            for group in (optimizers[1].param_groups[0], ref_optimizers[1].param_groups[0]):
                group["lr"] *= 0.1
                group["momentum"] = group["momentum"] and 0.6
        if step == 4:  # trial 1 leaves the stack; the others go on with their momentum
            stack.keep([0, 2])
            models, refs, trials = [models[0], models[2]], [refs[0], refs[2]], [trials[0], trials[2]]
            optimizers, ref_optimizers = [optimizers[0], optimizers[2]], [ref_optimizers[0], ref_optimizers[2]]
        _same_grads(stack, refs, generator)
        step_optimizers(stack, trials)
        for optimizer in ref_optimizers:
            optimizer.step()
        assert isinstance(stack.update_cache, StackedSGD)  # the stacked path did the update
    for model, ref, optimizer, ref_optimizer in zip(models, refs, optimizers, ref_optimizers):
        for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7, msg=name)
        saved, expected = OwnStorage(optimizer).state_dict(), ref_optimizer.state_dict()
        assert saved["param_groups"] == expected["param_groups"]
        assert saved["state"].keys() == expected["state"].keys()
        for i, state in expected["state"].items():
            torch.testing.assert_close(saved["state"][i]["momentum_buffer"], state["momentum_buffer"],
                                       rtol=1e-6, atol=1e-7)


def test_other_optimizers_and_clipping_step_each_trial():
    """Adam is stepped per trial; grad clipping clips each trial's own gradient norm."""
    torch.manual_seed(0)
    models = [small_net() for _ in range(2)]
    refs = [copy.deepcopy(m) for m in models]
    stack = StackedModels(models)
    trials = [_Trial(m, torch.optim.Adam(m.parameters(), lr=lr), grad_clip=0.5) for m, lr in zip(models, (1e-2, 1e-3))]
    ref_optimizers = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(refs, (1e-2, 1e-3))]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        _same_grads(stack, refs, generator)
        step_optimizers(stack, trials)
        for ref, optimizer in zip(refs, ref_optimizers):
            nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
            optimizer.step()
    assert stack.update_cache is None
    for model, ref in zip(models, refs):
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)


def test_channels_last_stack_gives_each_model_its_own_logits_and_gradients():
    torch.manual_seed(0)
    models = [LeNet(3, 32, 10, return_shapes=False) for _ in range(3)]
    refs = [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in models]  # as a single run's
    stack = StackedModels(models, channels_last=True)
    assert models[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    xs = [torch.randn(4, 3, 32, 32) for _ in models]
    y = torch.randint(0, 10, (3, 4))
    x = stack.stack_inputs(xs)
    assert x.shape == (3, 4, 3, 32, 32) and torch.equal(x[1], xs[1])
    logits = stack.forward(x)
    sum(nn.functional.cross_entropy(logits[k], y[k]) for k in range(3)).backward()
    for k, ref in enumerate(refs):
        ref_logits = ref(xs[k].contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(logits[k].detach(), ref_logits.detach(), rtol=1e-5, atol=1e-6)
        nn.functional.cross_entropy(ref_logits, y[k]).backward()
        for name, q in ref.named_parameters():
            torch.testing.assert_close(stack.params[name].grad[k], q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_trials_checkpoint_holds_only_its_own_weights():
    """torch.save of a view writes the whole stack: OwnStorage copies each trial's tensors out."""
    torch.manual_seed(0)
    models = [LeNet(3, 32, 10, return_shapes=False) for _ in range(4)]
    single = copy.deepcopy(models[2]).to(memory_format=torch.channels_last)
    StackedModels(models, channels_last=True)
    saved = OwnStorage(models[2]).state_dict()
    for name, tensor in single.state_dict().items():
        assert torch.equal(saved[name], tensor)
        assert saved[name].stride() == tensor.stride(), name  # laid out as the single run's
        assert saved[name].untyped_storage().nbytes() == tensor.numel() * tensor.element_size()

    def size(state) -> int:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return len(buffer.getvalue())

    assert size(saved) == size(single.state_dict()) < size(models[2].state_dict()) / 3


@pytest.mark.parametrize("batch_size, threads, fused", [(8, 1, True), (16, 2, True), (32, 1, False), (32, 2, False),
                                                        (32, 4, False), (64, 2, False)])
def test_fuse_auto_on_a_cpu_depends_on_batch_size_and_threads(batch_size, threads, fused):
    """bench/fused_step.py and bench/fused.py: on a CPU a fused step wins up to batch 16, whatever the threads."""
    from omegaconf import OmegaConf

    from runner.fused.launcher import FusedLauncher

    cfg = OmegaConf.create({"device": "cpu", "batch_size": batch_size, "compute": {"threads": threads}})
    assert FusedLauncher(fuse="auto")._should_fuse(cfg) is fused
    assert FusedLauncher(fuse="true")._should_fuse(cfg) and not FusedLauncher(fuse="false")._should_fuse(cfg)
