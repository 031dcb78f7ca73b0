"""Reading, checking and writing model weights (.pth / .pt / .bin and .safetensors).

Loading is strict on purpose: a checkpoint whose keys or shapes do not match the
model raises a ConfigError that lists every offending key, instead of silently
leaving layers at their random initialisation (what ``strict=False`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import safetensors.torch
import torch
from torch import Tensor, nn

from rpnet.errors import ConfigError
from rpnet.io import atomic_path

SAFETENSORS_SUFFIXES = (".safetensors",)
# .bin is the name Hugging Face gives a torch-pickled state dict (pytorch_model.bin).
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
CHECKPOINT_KEYS = ("state_dict", "model")  # where training checkpoints keep the weights
DDP_PREFIX = "module."  # DistributedDataParallel's wrapper name in front of every key
# A counter BatchNorm keeps since PyTorch 0.4.1; older ImageNet checkpoints (torchvision's
# first ResNet files) lack it and BatchNorm fills it in on load, so its absence is fine.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
MAX_LISTED_KEYS = 20  # keys listed per kind of mismatch before "... and N more"


def _suffix_error(path: Path) -> ConfigError:
    valid = sorted(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
    return ConfigError(f"{path}: unknown weights format {path.suffix!r}; use one of {valid}")


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict (key -> tensor, on the CPU) from a .pth/.pt/.bin or .safetensors file.

    A training checkpoint that keeps its weights under "state_dict" or "model" is
    unwrapped, and a leading "module." (DistributedDataParallel) is stripped from keys.
    Torch files are read with ``weights_only=True``, so no pickled code runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise _suffix_error(path)
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            obj = safetensors.torch.load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file is the user's to fix
        raise ConfigError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise ConfigError(f"{path}: not a state dict; entries that are not tensors: "
                          f"{_listing(not_tensors)}")
    return {k.removeprefix(DDP_PREFIX): v for k, v in obj.items()}


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    more = len(items) - MAX_LISTED_KEYS
    return shown + (f" ... and {more} more" if more > 0 else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor],
                     ignore: tuple[str, ...] = ()) -> list[str]:
    """The problems loading ``state_dict`` into ``model`` would have, one line each.

    Keys starting with a prefix in ``ignore`` are skipped on both sides. A missing
    ``num_batches_tracked`` is not a problem (see OPTIONAL_SUFFIXES). An empty list
    means every remaining key matches by name and shape.
    """
    def kept(key: str) -> bool:
        return not key.startswith(ignore)

    expected = {k: v for k, v in model.state_dict().items() if kept(k)}
    given = {k: v for k, v in state_dict.items() if kept(k)}
    missing = sorted(k for k in expected if k not in given and not k.endswith(OPTIONAL_SUFFIXES))
    unexpected = sorted(k for k in given if k not in expected)
    mismatched = sorted(
        f"{k} (file {tuple(given[k].shape)}, model {tuple(expected[k].shape)})"
        for k in given.keys() & expected.keys() if given[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    return problems


def load_backbone_weights(model: nn.Module, path: str | Path,
                          ignore: tuple[str, ...] = ("fc.",)) -> nn.Module:
    """Load the weights file ``path`` into ``model`` in place and return the model.

    Every key of the model must be in the file and every key of the file in the model,
    with equal shapes, except keys starting with a prefix in ``ignore`` (by default the
    ImageNet classifier ``fc.``, which a backbone does not use). Otherwise a ConfigError
    names the file and lists the offending keys and shapes.
    """
    state_dict = read_weights(path)
    problems = check_state_dict(model, state_dict, ignore)
    if problems:
        raise ConfigError(f"{path}: weights do not fit the {type(model).__name__}; "
                          + "; ".join(problems))
    kept = {k: v for k, v in state_dict.items() if not k.startswith(ignore)}
    # strict=False only because the ignored keys and an absent num_batches_tracked would
    # otherwise be reported; check_state_dict has already refused every other difference.
    model.load_state_dict(kept, strict=False)
    return model


def save_weights(state_dict: Mapping[str, Tensor], path: str | Path) -> Path:
    """Write a state dict atomically: safetensors for .safetensors, a torch file otherwise.

    The format follows the suffix (.safetensors, or .pth/.pt/.bin). Tensors are moved
    to the CPU and made contiguous, as safetensors requires.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise _suffix_error(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        if suffix in SAFETENSORS_SUFFIXES:
            safetensors.torch.save_file(tensors, str(tmp))
        else:
            torch.save(tensors, tmp)
    return path
