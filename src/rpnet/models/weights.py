"""Reading, checking and writing model weights (.pth / .pt / .bin and .safetensors).

Loading is strict on purpose: a checkpoint whose keys or shapes do not match the
model raises a ConfigError that lists every offending key, instead of silently
leaving layers at their random initialisation (what ``strict=False`` does).

Every .safetensors file of the package is written by :func:`save_safetensors`, which
writes the format itself so that the same tensors and metadata always give the same
bytes (the safetensors library writes its metadata map in a different order each time).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
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
# The safetensors format (https://github.com/huggingface/safetensors#format): an 8-byte
# little-endian header length N, N bytes of JSON (padded with spaces), then the tensor data.
SAFETENSORS_METADATA_KEY = "__metadata__"  # the header entry holding the string -> string metadata
SAFETENSORS_ALIGNMENT = 8  # the data starts at a multiple of 8 bytes, so every tensor is aligned
SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


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
    if suffix in SAFETENSORS_SUFFIXES:
        return save_safetensors(path, state_dict)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)
    return path


def safetensors_layout(tensors: Mapping[str, Tensor]) -> list[str]:
    """The order the tensors' data is stored in: widest item first, then by name.

    After the 8-byte-aligned start of the data, items of 8, 4, 2, then 1 bytes keep every
    tensor at a multiple of its item size (the safetensors library, too, stores wider items first).
    """
    return sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))


def safetensors_header(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """The bytes before the tensor data: the header length, then the JSON header, padded.

    The JSON holds ``__metadata__`` first (keys sorted; left out when ``metadata`` is None),
    then one entry per tensor (dtype, shape, data_offsets relative to the data start) in
    :func:`safetensors_layout` order, so it depends on the contents only, never on the
    order ``tensors`` or ``metadata`` were filled in.
    """
    header: dict[str, object] = {}
    if metadata is not None:
        bad = sorted(str(k) for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str))
        if bad:
            raise TypeError(f"safetensors metadata maps strings to strings; not so for {bad}")
        header[SAFETENSORS_METADATA_KEY] = {k: metadata[k] for k in sorted(metadata)}
    offset = 0
    for name in safetensors_layout(tensors):
        tensor = tensors[name]
        if name == SAFETENSORS_METADATA_KEY:
            raise ValueError(f"a tensor cannot be named {SAFETENSORS_METADATA_KEY!r}")
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise TypeError(f"tensor {name!r}: dtype {tensor.dtype} is not saved as safetensors here")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % SAFETENSORS_ALIGNMENT)  # the 8-byte length keeps the data start aligned
    return struct.pack("<Q", len(text)) + text


def little_endian_bytes(tensor: Tensor) -> np.ndarray:
    """A tensor's items as little-endian bytes (C order), the layout safetensors stores: (numel * itemsize,) uint8."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    if sys.byteorder == "big":
        data = data.reshape(-1, tensor.element_size())[:, ::-1].reshape(-1)
    return data


def save_safetensors(path: str | Path, tensors: Mapping[str, Tensor],
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` (and the string -> string ``metadata``) as a .safetensors file, atomically.

    The one writer of .safetensors files in the package: the bytes depend only on the
    names, dtypes, shapes and values of the tensors and on the metadata, so two identical
    runs write identical files. The file loads with ``safetensors.torch.load_file``, and
    ``safe_open(path, "pt").metadata()`` returns ``metadata``. Tensors may live on any
    device and need not be contiguous; each is copied to the CPU while it is written.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(safetensors_header(tensors, metadata))
        for name in safetensors_layout(tensors):
            fh.write(little_endian_bytes(tensors[name]))
    return Path(path)
