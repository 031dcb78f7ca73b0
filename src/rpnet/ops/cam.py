"""Class activation maps (paper Sec. III-C, eq. 1-2) and turning them into label maps.

Pure tensor/array functions; the device follows the inputs.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-5  # IRN's epsilon in the per-class max normalisation


def class_activation_maps(features: Tensor, weight: Tensor) -> Tensor:
    """Eq. 1 before normalisation: relu(Theta^T f(x, y)) for every class.

    features (B, D, H, W), weight (C, D, 1, 1) (the bias-free 1x1 classifier) -> (B, C, H, W).
    """
    return F.relu(F.conv2d(features, weight))


def max_normalize(cams: Tensor, eps: float = EPS) -> Tensor:
    """Eq. 1's division: each class map divided by its spatial max (+ eps). (..., H, W) -> same."""
    return cams / (cams.amax(dim=(-2, -1), keepdim=True) + eps)


def tag_masked(cams: Tensor, tags: Tensor) -> Tensor:
    """Eq. 2: keep the classes in the image-level label vector c. cams (B, C, H, W), tags (B, C)."""
    return cams * tags[:, :, None, None].to(cams.dtype)


def cams_to_labels(cams: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """The CAM -> label map rule of IRN's evaluation (docs/method.md stage 3).

    cams (K, H, W) max-normalised maps of the image's tagged classes, keys (K,) their foreground
    class indices (0-based). The background gets the constant score ``threshold``; each pixel takes the
    argmax, so label 0 is background and label ``keys[k] + 1`` is class ``keys[k]``. -> (H, W) uint8.
    """
    scores = np.concatenate([np.full((1,) + cams.shape[1:], threshold, dtype=np.float32), cams.astype(np.float32)])
    labels = np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1])
    return labels[scores.argmax(axis=0)].astype(np.uint8)


def multiscale_mean_cams(maps: list[Tensor], size: tuple[int, int]) -> Tensor:
    """The mean over scales of relu(resize(map_s)): raw class maps resized first, then rectified.

    The released code's target for eq. 13: the enhanced branch's raw class maps Theta^T f'_N at each
    input scale, bilinearly resized (align_corners False) to ``size`` (the first scale's map size),
    ReLU'd, averaged. maps: (B, C, h_s, w_s) each -> (B, C, *size).
    """
    resized = [m if tuple(m.shape[-2:]) == tuple(size) else F.interpolate(m, size=size, mode="bilinear",
                                                                         align_corners=False) for m in maps]
    return sum(F.relu(m) for m in resized) / len(resized)
