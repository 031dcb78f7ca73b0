"""Seeded random weights that any NumPy and PyTorch version reproduces exactly (for test fixtures).

Each floating entry of a state dict is drawn from NumPy's legacy ``RandomState`` seeded with
``(seed, crc32(key))``: the legacy generator's stream is frozen by NumPy's compatibility policy,
unlike ``torch.manual_seed``'s or NumPy's newer ``Generator``'s, so a fixture can store a seed in
place of the weights. The draws depend only on the key, its shape and the seed, not on the
order of the keys.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor, nn


def seeded_array(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The float32 values for state-dict entry ``key`` of ``shape``.

    conv / linear weights (2-D and more): normal with std sqrt(2 / fan_in) (He initialisation);
    ``running_var``: uniform in [0.5, 1.5); ``running_mean``: normal * 0.1; other 1-D ``weight``s
    (norm scales): 1 + normal * 0.1; 1-D ``bias``es: normal * 0.1.
    """
    rng = np.random.RandomState([seed, zlib.crc32(key.encode())])
    name = key.rsplit(".", 1)[-1]
    if name == "running_var":
        values = 0.5 + rng.random_sample(shape)
    elif name == "running_mean" or (name == "bias" and len(shape) == 1):
        values = 0.1 * rng.standard_normal(shape)
    elif len(shape) == 1:
        values = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
        fan_in = int(np.prod(shape[1:]))
        values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    return values.astype(np.float32)


def seeded_state_dict(model: nn.Module, seed: int) -> dict[str, Tensor]:
    """A state dict for ``model`` with every floating entry from :func:`seeded_array` (others kept)."""
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            state[key] = torch.from_numpy(seeded_array(key, tuple(value.shape), seed)).to(value.dtype)
        else:
            state[key] = value.clone()
    return state


def seeded_images(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """The parity check's input images (float32 standard normal of ``shape``, e.g. (pairs, 2, 3, H, W)):
    regenerated from the seed, so the fixture stores only what the released code computed from them."""
    return np.random.RandomState(seed + 2).standard_normal(shape).astype(np.float32)
