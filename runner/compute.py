"""How the arithmetic runs: the device, CPU threads, precision and cuDNN switches, torch.compile.

None of these change what a run computes beyond float rounding (compute/default.yaml says so);
the training loop (runner/train.py) asks for them once at start-up.
"""

from __future__ import annotations

import os
import time

import torch
from omegaconf import DictConfig
from torch import nn

from common.errors import ConfigError
from runner.config import switch


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


def compile_model(model: nn.Module, splits: dict, augment: nn.Module, normalize: nn.Module, loss_fn: nn.Module,
                  amp_dtype: torch.dtype | None, channels_last: bool, batch_size: int) -> tuple[nn.Module, float]:
    """torch.compile the model and pay its compile time up front, so it's reported apart from training.

    The warm-up step is undone: parameters, buffers and the RNG are restored, so compile=true
    trains the same steps as compile=false.
    """
    compiled = torch.compile(model)
    device = next(model.parameters()).device
    saved_state = {k: v.clone() for k, v in model.state_dict().items()}
    saved_rng = torch.get_rng_state()
    t0 = time.perf_counter()
    x, y = next(splits["train"].batches(batch_size, shuffle=False, device=device))
    model.train()
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        loss_fn(compiled(to_model_input(augment(x), normalize, channels_last)), y).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    compile_s = time.perf_counter() - t0
    model.load_state_dict(saved_state)
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(saved_rng)
    return compiled, compile_s


def to_model_input(x: torch.Tensor, normalize: nn.Module, channels_last: bool) -> torch.Tensor:
    """Normalised, and in channels-last layout where the run asks for it."""
    x = normalize(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
