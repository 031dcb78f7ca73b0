"""Reduced training sets (paper Table II): keep a fraction of each class's images.

Images carry several tags, so "a fraction of each class" cannot be met exactly by
sampling each class on its own. The greedy rule here visits classes from the rarest
to the most common and tops each one up to its target ``max(1, round(f * n_c))``
(half rounds up) with images of that class not yet kept. Rare classes, visited
first, hit their target exactly; a common class may overshoot, because images kept
for rarer classes also carry it. To keep that overshoot small, candidates whose
other classes have already reached their targets are taken last.
"""

from __future__ import annotations

import numpy as np

HALF = 0.5  # floor(x + 0.5): round half up, whatever numpy's banker's rounding would do


def class_targets(tags: np.ndarray, fraction: float) -> np.ndarray:
    """(C,) int: ``max(1, round(fraction * n_c))`` images per class, 0 for a class with no image."""
    counts = np.asarray(tags, dtype=bool).sum(axis=0)
    targets = np.maximum(1, np.floor(fraction * counts + HALF)).astype(np.int64)
    return np.where(counts > 0, targets, 0)


def stratified_fraction(tags: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices (sorted, int64) of a seeded subset keeping about ``fraction`` of each class's images.

    ``tags``: (N, C) bool, image i tagged with class c. Each class c with n_c images
    ends up with at least ``max(1, round(fraction * n_c))`` of them (more only for
    classes that co-occur with rarer ones; see the module docstring). Untagged
    images are sampled on their own at the same fraction. ``fraction`` 1.0 keeps all.
    """
    tags = np.asarray(tags, dtype=bool)
    if tags.ndim != 2:
        raise ValueError(f"tags must be (N, C), got shape {tags.shape}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_images = tags.shape[0]
    if fraction == 1.0:
        return np.arange(n_images, dtype=np.int64)
    rng = np.random.default_rng(seed)
    priority = rng.permutation(n_images)  # the random order among otherwise equal candidates
    targets = class_targets(tags, fraction)
    kept = np.zeros(n_images, dtype=bool)
    kept_counts = np.zeros(tags.shape[1], dtype=np.int64)
    for cls in np.argsort(tags.sum(axis=0), kind="stable"):
        need = targets[cls] - kept_counts[cls]
        if need <= 0:
            continue
        candidates = np.flatnonzero(tags[:, cls] & ~kept)
        full = kept_counts >= targets
        full[cls] = False
        overshoot = tags[candidates][:, full].sum(axis=1)  # classes this image would push past target
        chosen = candidates[np.lexsort((priority[candidates], overshoot))][:need]
        kept[chosen] = True
        kept_counts += tags[chosen].sum(axis=0)
    untagged = np.flatnonzero(~tags.any(axis=1))
    if untagged.size:
        n_untagged = int(np.floor(fraction * untagged.size + HALF))
        kept[untagged[np.argsort(priority[untagged])][:n_untagged]] = True
    return np.flatnonzero(kept).astype(np.int64)


__all__ = ["stratified_fraction", "class_targets"]
