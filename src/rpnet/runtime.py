"""The process's runtime: device choice, seeding and GPU memory layout, read in one place."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import sys

import numpy as np
import torch
from torch import Tensor, nn

from .engine.distributed import world
from .errors import ConfigError


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def die_with_parent() -> None:
    """Worker initializer: have the kernel kill this process when the process that started it dies, however
    it dies (kill -9 included), so no worker outlives a killed run. Linux only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # an unusual libc: the worker simply lives as before
        pass
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error.

    Under torchrun a CUDA device is this process's own GPU, ``cuda:LOCAL_RANK``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but torch sees no CUDA device (use device=auto or cpu)")
    if name == "cuda":
        current = world()
        return torch.device("cuda", current.local_rank if current.distributed else torch.cuda.current_device())
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for samplers and augmentation."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def use_channels_last(device: torch.device, enabled: bool) -> bool:
    """NHWC only on CUDA, where cuDNN's tensor-core convolutions want it; CPU keeps NCHW."""
    return enabled and device.type == "cuda"


def to_memory_format(x: Tensor | nn.Module, channels_last: bool) -> Tensor | nn.Module:
    """A 4-D tensor or a module in channels-last layout when ``channels_last``, else unchanged."""
    if not channels_last:
        return x
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last)
