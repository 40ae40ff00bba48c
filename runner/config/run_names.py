"""`${run_suffix:}`: a per-process suffix that keeps run and sweep folders apart.

`${now:%Y-%m-%d_%H-%M-%S}` alone gave two runs started in the same second one folder. The
suffix is the process id (unique among live processes on this machine) and four random hex
digits (apart across machines sharing a disk, and across pid reuse). It is drawn once per
process, and registered with `use_cache` so Hydra's copies of the config (one per sweep job,
`OmegaConf.copy_cache`) resolve it to the same value as the original.
"""

from __future__ import annotations

import functools
import os
import secrets

from omegaconf import OmegaConf


@functools.cache
def run_suffix() -> str:
    return f"{os.getpid()}-{secrets.token_hex(2)}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_suffix"):
        OmegaConf.register_resolver("run_suffix", run_suffix, use_cache=True)
