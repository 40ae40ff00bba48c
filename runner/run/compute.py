"""How the arithmetic runs: the device, CPU threads, precision and cuDNN switches, torch.compile.

None of these change what a run computes beyond float rounding (compute/default.yaml says so);
the training loop (runner/run/train.py) asks for them once at start-up.
"""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig
from torch import nn

from common.errors import ConfigError
from runner.config.schema import switch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is visible; use device=auto or device=cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps but MPS is not available; use device=auto or device=cpu")
    return torch.device(name)


def cpu_threads(threads: str | int, parallel_jobs: int = 1) -> int:
    """compute.threads=auto: this machine's cores shared evenly among the trials running at once.

    Two trials that each spin two OpenMP threads on two cores run many times slower than two
    single-thread trials: their threads fight over the cores at every barrier.
    """
    if str(threads) != "auto":
        return int(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, parallel_jobs))


def configure_compute(compute: DictConfig, device: torch.device, parallel_jobs: int = 1) -> torch.dtype | None:
    """Apply the compute switches; return the autocast dtype, or None for full precision."""
    torch.set_num_threads(cpu_threads(compute.threads, parallel_jobs))
    if switch(compute.get("cuda_graph", "auto")) == "true" and device.type != "cuda":
        raise ConfigError(f"compute.cuda_graph=true needs a CUDA GPU and this run trains on {device.type}; "
                          "use compute.cuda_graph=auto or false")
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormals make CPU convolutions crawl late in training
        return torch.bfloat16 if switch(compute.amp) == "true" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(compute.cudnn_benchmark)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if switch(compute.amp) in ("auto", "true"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def to_model_input(x: torch.Tensor, normalize: nn.Module, channels_last: bool) -> torch.Tensor:
    """Normalised, and in channels-last layout where the run asks for it."""
    x = normalize(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
