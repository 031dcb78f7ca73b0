"""Losses as pure functions: the classifier's (eq. 11-13); IRN's and segmentation's join later."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops.cam import class_activation_maps, max_normalize, tag_masked


def multilabel_loss(logits: Tensor, tags: Tensor) -> Tensor:
    """Eq. 12: the multilabel soft-margin loss, mean over classes and images.

    -[u log sigmoid(v) + (1 - u) log(1 - sigmoid(v))]; logits, tags (B, C).
    """
    return F.multilabel_soft_margin_loss(logits, tags)


def cam_consistency_loss(features: Tensor, features_enhanced: Tensor, weight: Tensor, tags: Tensor) -> Tensor:
    """Eq. 13 on CAMs (METHOD.md's default reading of L_s).

    The mean squared difference between the per-class max-normalised, tag-masked CAMs of the
    original branch (from f_N) and of the enhanced branch (from f'_N), so that the refined
    prediction supervises the original one. features (B, D, h, w), weight (C, D, 1, 1), tags (B, C).
    """
    cam = tag_masked(max_normalize(class_activation_maps(features, weight)), tags)
    cam_enh = tag_masked(max_normalize(class_activation_maps(features_enhanced, weight)), tags)
    return (cam - cam_enh).pow(2).mean()


def feature_consistency_loss(features: Tensor, features_enhanced: Tensor) -> Tensor:
    """Eq. 13 as printed: sum over the H*W positions of ||f'_N - f_N||^2, mean over images."""
    return (features_enhanced - features).pow(2).sum(dim=(1, 2, 3)).mean()


class ClassifierLoss(NamedTuple):
    total: Tensor
    cls: Tensor  # L_c on the enhanced branch (or the baseline's only branch)
    consistency: Tensor  # L_s (zero for the baseline)


def classifier_loss(
    out,
    tags: Tensor,
    classifier_weight: Tensor,
    *,
    lambda_s: float = 10.0,
    ls_mode: str = "cam",
    ls_detach_enhanced: bool = False,
    lc_on_original: bool = False,
) -> ClassifierLoss:
    """Eq. 11: L = L_c + lambda L_s for a :class:`~rpnet.models.rpnet.ClassifierOutput`.

    The baseline (no enhanced branch) gets L_c on its logits and L_s = 0.
    """
    if out.logits_enhanced is None:
        lc = multilabel_loss(out.logits, tags)
        return ClassifierLoss(lc, lc, torch.zeros((), device=lc.device))
    lc = multilabel_loss(out.logits_enhanced, tags)
    if lc_on_original:
        lc = lc + multilabel_loss(out.logits, tags)
    enhanced = out.features_enhanced.detach() if ls_detach_enhanced else out.features_enhanced
    if ls_mode == "cam":
        ls = cam_consistency_loss(out.features, enhanced, classifier_weight, tags)
    elif ls_mode == "feature":
        ls = feature_consistency_loss(out.features, enhanced)
    else:
        raise ValueError(f"ls_mode must be 'cam' or 'feature', got {ls_mode!r}")
    return ClassifierLoss(lc + lambda_s * ls, lc, ls)
