"""Losses as pure functions: the classifier's (paper eq. 11-13) and IRN's (docs/method.md stage 5).

IRN's pairs and their labels come from :mod:`rpnet.ops.affinity`: tensors over (B, O, h', w'), O
offsets within the training radius, on the cropped "from" grid. Each IRN term is a mean over the
pairs of its kind in the whole batch, as IRN's train_irn computes it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops.affinity import AffinityLabels, PathIndex, pair_difference, path_affinity
from .ops.cam import class_activation_maps, max_normalize, tag_masked


def multilabel_loss(logits: Tensor, tags: Tensor) -> Tensor:
    """Eq. 12: the multilabel soft-margin loss, mean over classes and images.

    -[u log sigmoid(v) + (1 - u) log(1 - sigmoid(v))]; logits, tags (B, C).
    """
    return F.multilabel_soft_margin_loss(logits, tags)


def cam_consistency_loss(features: Tensor, features_enhanced: Tensor, weight: Tensor, tags: Tensor) -> Tensor:
    """Eq. 13 on CAMs (docs/method.md's default reading of L_s).

    The mean squared difference between the per-class max-normalised, tag-masked CAMs of the
    original branch (from f_N) and of the enhanced branch (from f'_N), so that the refined
    prediction supervises the original one. features (B, D, h, w), weight (C, D, 1, 1), tags (B, C).
    """
    cam = tag_masked(max_normalize(class_activation_maps(features, weight)), tags)
    cam_enh = tag_masked(max_normalize(class_activation_maps(features_enhanced, weight)), tags)
    return (cam - cam_enh).pow(2).mean()


def cam_map_consistency_loss(cams: Tensor, cams_enhanced: Tensor, tags: Tensor) -> Tensor:
    """Eq. 13 on CAMs given directly: mean of (tag_masked(max_normalize(a)) - the same of b)^2.

    cams, cams_enhanced (B, C, h, w) relu CAMs of the two branches (each image by its own classifier,
    the enhanced side possibly a multi-scale mean), tags (B, C).
    """
    return (tag_masked(max_normalize(cams), tags) - tag_masked(max_normalize(cams_enhanced), tags)).pow(2).mean()


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
    lc_on_enhanced: bool = True,
) -> ClassifierLoss:
    """Eq. 11: L = L_c + lambda L_s for a :class:`~rpnet.models.rpnet.ClassifierOutput`.

    The baseline (no enhanced branch) gets L_c on its logits and L_s = 0. L_c (eq. 12) is the sum of
    the terms of the branches chosen: the enhanced one (``lc_on_enhanced``, the paper) and/or the
    original one (``lc_on_original``, the released code). Each term is a mean over the batch's images.

    When the model gives its own CAMs (``out.cams``, ``out.cams_enhanced``: role heads or a
    multi-scale target, docs/method.md "The released code's reading") L_s compares those; then
    ``ls_detach_enhanced`` detaches the enhanced CAMs.
    """
    if out.logits_enhanced is None:
        lc = multilabel_loss(out.logits, tags)
        return ClassifierLoss(lc, lc, torch.zeros((), device=lc.device))
    if not (lc_on_original or lc_on_enhanced):
        raise ValueError("L_c needs a branch: lc_on_original and lc_on_enhanced are both false")
    terms = []
    if lc_on_enhanced:
        terms.append(multilabel_loss(out.logits_enhanced, tags))
    if lc_on_original:
        terms.append(multilabel_loss(out.logits, tags))
    lc = terms[0] if len(terms) == 1 else terms[0] + terms[1]
    if ls_mode == "cam" and getattr(out, "cams", None) is not None:
        target = out.cams_enhanced.detach() if ls_detach_enhanced else out.cams_enhanced
        ls = cam_map_consistency_loss(out.cams, target, tags)
        return ClassifierLoss(lc + lambda_s * ls, lc, ls)
    enhanced = out.features_enhanced.detach() if ls_detach_enhanced else out.features_enhanced
    if ls_mode == "cam":
        ls = cam_consistency_loss(out.features, enhanced, classifier_weight, tags)
    elif ls_mode == "feature":
        ls = feature_consistency_loss(out.features, enhanced)
    else:
        raise ValueError(f"ls_mode must be 'cam' or 'feature', got {ls_mode!r}")
    return ClassifierLoss(lc + lambda_s * ls, lc, ls)


# --------------------------------------------------------------------------- IRN (stage 5)

LOG_EPS = 1e-5  # IRN's guard inside the logs: -log(aff + eps), -log(1 + eps - aff)
COUNT_EPS = 1e-5  # IRN's guard on the pair counts of a term with no pairs


def _masked_mean(values: Tensor, mask: Tensor, per_pair: int = 1) -> Tensor:
    """sum(values * mask) / (per_pair * sum(mask) + eps); values broadcast against mask."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / (per_pair * mask.sum() + COUNT_EPS)


class AffinityLoss(NamedTuple):
    bg_pos: Tensor  # mean -log(aff) over background-background pairs
    fg_pos: Tensor  # mean -log(aff) over same-foreground-class pairs
    neg: Tensor  # mean -log(1 - aff) over pairs of different labels


def affinity_loss(affinity: Tensor, labels: AffinityLabels) -> AffinityLoss:
    """The class-boundary loss terms (IRN's L^B) from pair affinities.

    affinity (B, O, h', w') in [0, 1] (1 - max boundary on the path, :func:`path_affinity`),
    labels' masks of the same shape. Pairs of one label should have affinity 1 (no boundary
    between them), pairs of two labels affinity 0 (a boundary somewhere on the path).
    """
    pos = -torch.log(affinity + LOG_EPS)
    neg = -torch.log(1 + LOG_EPS - affinity)
    return AffinityLoss(_masked_mean(pos, labels.bg_pos), _masked_mean(pos, labels.fg_pos),
                        _masked_mean(neg, labels.neg))


class DisplacementLoss(NamedTuple):
    fg: Tensor  # mean L1 of (D(from) - D(to)) - (to - from) over same-foreground-class pairs
    bg: Tensor  # mean L1 of D(from) - D(to) over background-background pairs


def displacement_loss(pair_disp: Tensor, offsets: Tensor, labels: AffinityLabels) -> DisplacementLoss:
    """The displacement-field loss terms (IRN's L^D_fg and L^D_bg).

    pair_disp (B, 2, O, h', w'): D(from) - D(to) of the (dy, dx) displacement field
    (:func:`pair_difference`), offsets (2, O) the pairs' (dy, dx) = to - from.
    D points from each pixel to its instance's centroid, so for two pixels of one instance
    from + D(from) = to + D(to), i.e. D(from) - D(to) = to - from. Same-class pairs stand in for
    same-instance pairs; background pairs should have equal displacements. Each mean is over
    pairs and the two components (IRN divides by 2 * the pair count).
    """
    target = offsets[None, :, :, None, None].to(pair_disp.dtype)  # (1, 2, O, 1, 1)
    fg = _masked_mean((pair_disp - target).abs(), labels.fg_pos.unsqueeze(1), per_pair=2)
    bg = _masked_mean(pair_disp.abs(), labels.bg_pos.unsqueeze(1), per_pair=2)
    return DisplacementLoss(fg, bg)


class IRNLoss(NamedTuple):
    total: Tensor
    affinity: AffinityLoss
    displacement: DisplacementLoss


def irn_loss(edge_logits: Tensor, displacement: Tensor, labels: AffinityLabels, index: PathIndex,
             fg_pos_weight: float = 1.0) -> IRNLoss:
    """IRN's training objective from the network's outputs.

    edge_logits (B, 1, h, w) boundary logits, displacement (B, 2, h, w), labels over the pairs
    of ``index`` (:func:`~rpnet.ops.affinity.affinity_labels` of the stride-4 confident labels).

    total = ((bg_pos + w * fg_pos) / 2 + neg) / 2 + (disp_fg + disp_bg) / 2 with w =
    ``fg_pos_weight``. w = 1 is IRN's weighting: the two positive kinds count equally however
    many pairs each has, and the boundary and displacement parts count equally. w > 1 weighs
    the pairs within a confident foreground region more, against the negative pairs that
    otherwise teach the branch to mark the region's inside as boundary.
    """
    aff = affinity_loss(path_affinity(torch.sigmoid(edge_logits[:, 0]), index), labels)
    disp = displacement_loss(pair_difference(displacement, index), index.offset_tensor(displacement.device), labels)
    total = ((aff.bg_pos + fg_pos_weight * aff.fg_pos) / 2 + aff.neg) / 2 + (disp.fg + disp.bg) / 2
    return IRNLoss(total, aff, disp)


# --------------------------------------------------------------------------- segmentation (stage 8)

SEG_IGNORE_INDEX = 255  # rpnet.io.IGNORE_INDEX: crop padding, VOC borders, unsure pseudo labels


def segmentation_loss(logits: Tensor, target: Tensor, ignore_index: int = SEG_IGNORE_INDEX) -> Tensor:
    """Pixel-wise cross-entropy, mean over the pixels whose label is not ``ignore_index``.

    logits (B, C, H, W), target (B, H, W) integer labels in 0..C-1 or ``ignore_index``.
    A batch without a single labelled pixel gives 0 (with a gradient), not the NaN of 0 / 0.
    """
    total = F.cross_entropy(logits, target.long(), ignore_index=ignore_index, reduction="sum")
    labelled = (target != ignore_index).sum()
    return total / labelled.clamp(min=1)
