"""L-infinity attacks (FGSM, PGD) and the `adversary` config group's adversarial training.

Pixels are attacked in the image's own space before normalisation: an epsilon is a fraction of
the [0, 1] pixel range (8/255 is eight grey levels), and adversarial images are clipped to it.
The batches here are in the loader's 0..255 scale (uint8 or float), so epsilon is multiplied by
255 inside and an epsilon of 0 feeds the model exactly the clean batch, bit for bit; the model
always sees `normalize(x)`. Attacks run in float32 with autocast off: half-precision gradients
of a 1/255 step round to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError

ATTACK_BATCH = 256  # images attacked at once when measuring robust accuracy: memory, not results


def logits_of(output: torch.Tensor | tuple) -> torch.Tensor:
    """A model's logits (LeNet's course interface returns ``(logits, shapes)``)."""
    return output[0] if isinstance(output, tuple) else output


def check_epsilon(epsilon: float, key: str = "epsilon") -> float:
    epsilon = float(epsilon)
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"{key}={epsilon:g} is outside [0, 1]: an epsilon is a fraction of the pixel range, "
                          f"e.g. {key}=0.1 or 8/255")
    return epsilon


def default_alpha(epsilon: float, steps: int) -> float:
    """FGSM's single step is epsilon itself; PGD takes Madry et al.'s 2.5 * epsilon / steps."""
    return epsilon if steps == 1 else 2.5 * epsilon / steps


@dataclass(frozen=True)
class Attack:
    """An L-inf attack: PGD with `steps` steps of size `alpha` (None: `default_alpha`) within `epsilon`,
    from a random start or the clean image. FGSM is steps=1, random_start=False."""

    epsilon: float
    steps: int = 10
    alpha: float | None = None
    random_start: bool = True

    @property
    def name(self) -> str:
        return "FGSM" if self.steps == 1 else f"PGD-{self.steps}"


def pgd(model: nn.Module, normalize: nn.Module, images: torch.Tensor, labels: torch.Tensor,
        attack: Attack) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy within an L-inf ball of radius `attack.epsilon`.

    `images` are 0..255 (uint8 or float); returns float 0..255 adversarial images, each within
    epsilon * 255 of its clean image and inside [0, 255].
    The model's mode (train/eval) is the caller's choice; its parameters get no gradient.
    """
    x = images.float()
    epsilon, steps = attack.epsilon, attack.steps
    radius = epsilon * 255.0
    if radius == 0.0 or steps == 0:
        return x
    step = (default_alpha(epsilon, steps) if attack.alpha is None else attack.alpha) * 255.0
    delta = torch.empty_like(x).uniform_(-radius, radius) if attack.random_start else torch.zeros_like(x)
    delta = (x + delta).clamp(0.0, 255.0) - x
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(logits_of(model(normalize(x + delta))), labels)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + step * grad.sign()).clamp(-radius, radius)
            delta = (x + delta).clamp(0.0, 255.0) - x
    return (x + delta).detach()


@torch.no_grad()
def predict(model: nn.Module, normalize: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Float32 logits of a 0..255 batch."""
    with torch.autocast(images.device.type, enabled=False):
        return logits_of(model(normalize(images))).float()


def robust_accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], normalize: nn.Module,
                    attack: Attack) -> float:
    """Top-1 accuracy (percent) on attacked images, the model in eval mode."""
    model.eval()
    correct, seen = 0, 0
    for x, y in batches:
        adversarial = pgd(model, normalize, x, y, attack)
        correct += int((predict(model, normalize, adversarial).argmax(1) == y).sum())
        seen += len(y)
    return 100.0 * correct / max(seen, 1)


class Adversary:
    """Adversarial training (conf/adversary/*.yaml): each training batch is replaced by its attack.

    The HW2 recipe and Madry et al.'s: the attack is made on the augmented batch, on the fly,
    with the model as it is at that step. It is made in train mode, as in Madry et al.'s and
    Wong et al.'s ("Fast is better than free") code, so batch-norm layers attack with the same
    batch statistics they then train with. Robust validation accuracy uses eval mode.
    """

    def __init__(self, epsilon: float, steps: int = 1, alpha: float | None = None,
                 random_start: bool = False) -> None:
        self.epsilon = check_epsilon(epsilon, "adversary.epsilon")
        if int(steps) < 1:
            raise ConfigError(f"adversary.steps={steps} is invalid: use 1 (FGSM) or more (PGD)")
        if alpha is not None and not float(alpha) > 0:
            raise ConfigError(f"adversary.alpha={alpha} is invalid: use a positive step, or null for the default")
        self.steps = int(steps)
        self.alpha = None if alpha is None else float(alpha)
        self.random_start = bool(random_start)
        self.attack = Attack(self.epsilon, self.steps, self.alpha, self.random_start)

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                normalize: nn.Module) -> torch.Tensor:
        """The adversarial version of a training batch (float, 0..255)."""
        return pgd(model, normalize, images, labels, self.attack)

    def robust_accuracy(self, model: nn.Module, split, normalize: nn.Module) -> float:
        """Accuracy (percent) on a split attacked at the training epsilon with the training attack."""
        device = next(model.parameters()).device
        batches = split.batches(ATTACK_BATCH, shuffle=False, device=device)
        return robust_accuracy(model, batches, normalize, self.attack)


def build_adversary(cfg) -> Adversary | None:
    """The run's adversary from its `adversary` config (None for adversary=none, or a config without one)."""
    if cfg is None or cfg.get("_target_") is None:
        return None
    from runner.run.build import build

    return build(cfg, "adversary")


def best_robust_acc(history: list[dict[str, float]]) -> float | None:
    """The best `val_robust_acc` over the epochs that measured it."""
    values = [row["val_robust_acc"] for row in history if row.get("val_robust_acc") is not None]
    return max(values) if values else None
