"""Resumable training checkpoints and final weights.

A checkpoint holds the model, the optimizer, the position in training (epoch, batch within
the epoch, global step) and the torch RNG state, saved with ``torch.save`` as plain tensors
and numbers, so that ``torch.load(weights_only=True)`` reads it back. It is written
atomically: a run killed while saving keeps the previous checkpoint.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import RpnetError
from ..io import atomic_path
from ..models.weights import save_safetensors


@dataclass
class Progress:
    """Where training stands: ``epoch`` in progress, ``batch`` batches done in it, ``step`` in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel, or the model itself."""
    return getattr(model, "module", model)


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> Path:
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": asdict(progress),
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Progress:
    """Restore model (and optimizer, RNG) from ``path``; returns the saved progress."""
    if not path.is_file():
        raise RpnetError(f"no checkpoint to resume from at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, OSError, ValueError, pickle.UnpicklingError) as exc:
        reason = f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"
        raise RpnetError(f"{path} is not a readable checkpoint ({reason}): "
                         "delete it to train this stage from its start (a stage command: or run it without "
                         "--resume; `rpnet run` then starts the stage afresh)") from None
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return Progress(**state["progress"])


def save_model_weights(path: Path, model: nn.Module) -> Path:
    """Final weights as safetensors (no code runs on load; the same weights give the same bytes)."""
    return save_safetensors(path, unwrap(model).state_dict())


def load_model_weights(path: Path, model: nn.Module) -> nn.Module:
    """Load weights written by :func:`save_model_weights` (strict: every key must match)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise RpnetError(f"weights not found: {path}")
    try:
        state = load_file(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise RpnetError(f"{path} is not a readable weights file ({type(exc).__name__}: {exc}): rerun the stage "
                         "that wrote it") from None
    missing, unexpected = unwrap(model).load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RpnetError(f"{path} does not fit the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return model
