"""Learning-rate schedules PyTorch has no single class for: linear warm-up before another schedule.

`LinearWarmup` is a `SequentialLR` of `LinearLR` (start_factor x lr rising to lr over `warmup`
steps of the scheduler) and then the scheduler in `after`, whose clock starts when warm-up ends.
Its state_dict is SequentialLR's: plain numbers and lists, so checkpoints load with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import functools
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, LinearLR, LRScheduler, SequentialLR

from common.errors import ConfigError

SchedulerFactory = Callable[..., LRScheduler]


class LinearWarmup(SequentialLR):
    """`warmup` scheduler steps of linear warm-up from `start_factor` x lr, then `after`.

    Args:
        after: the scheduler to run after warm-up, as a partial taking the optimizer (a
            `conf/scheduler/*.yaml` node; its `interval` key is dropped: this scheduler's own
            `interval` says how often both are stepped). None: constant lr after warm-up.
        warmup: length of the warm-up, counted in steps of the scheduler (epochs when
            `interval: epoch`, batches when `interval: step`).
        fit_after: the scheduler after warm-up only has the time left, so when `after` has a
            `T_max` (cosine annealing) it is shortened by `warmup`: the cosine still ends at
            `eta_min` on the last step rather than being cut off partway.
    """

    def __init__(self, optimizer: Optimizer, after: SchedulerFactory | None = None, warmup: int = 1,
                 start_factor: float = 0.1, fit_after: bool = True) -> None:
        if int(warmup) < 1:
            raise ConfigError(f"scheduler.warmup={warmup} is invalid: use 1 or more steps of warm-up")
        if not 0.0 < start_factor <= 1.0:
            raise ConfigError(f"scheduler.start_factor={start_factor} is invalid: use a value in (0, 1]")
        warmup = int(warmup)
        ramp = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
        rest = self._build_after(optimizer, after, warmup, fit_after)
        super().__init__(optimizer, schedulers=[ramp, rest], milestones=[warmup])

    @staticmethod
    def _build_after(optimizer: Optimizer, after: SchedulerFactory | None, warmup: int,
                     fit_after: bool) -> LRScheduler:
        if after is None:
            return ConstantLR(optimizer, factor=1.0, total_iters=0)
        if isinstance(after, functools.partial):
            kwargs = dict(after.keywords)
            kwargs.pop("interval", None)  # only the outermost scheduler's interval counts
            if "steps_per_epoch" in kwargs and kwargs["steps_per_epoch"] is None:
                raise ConfigError("scheduler.after=onecycle already warms up (pct_start); "
                                  "use scheduler=onecycle without the warm-up wrapper")
            if fit_after and kwargs.get("T_max") is not None:
                # A run no longer than its warm-up (a quick epochs=1 check) never reaches the cosine.
                kwargs["T_max"] = max(1, kwargs["T_max"] - warmup)
            after = functools.partial(after.func, *after.args, **kwargs)
        return after(optimizer)
