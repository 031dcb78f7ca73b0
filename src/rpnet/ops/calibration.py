"""Thresholds estimated from the data without ground truth (what ``auto`` computes; docs/calibration.md).

Pure numpy functions. Every score these thresholds apply to lies in [0, 1] (max-normalised
CAMs, globally normalised walk scores), so a histogram of :data:`BINS` equal bins over [0, 1]
summarises a whole split in a fixed-size array that ranks can add up.
"""

from __future__ import annotations


import numpy as np

BINS = 200  # histogram resolution: thresholds come out in steps of 0.005


def score_histogram(scores: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Counts of ``scores`` (any shape, values in [0, 1], clipped) in ``bins`` equal bins -> (bins,) int64.

    Bin i holds the values in [i / bins, (i + 1) / bins); 1.0 falls in the last bin.
    """
    values = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    index = np.minimum((values * bins).astype(np.int64), bins - 1)
    return np.bincount(index, minlength=bins).astype(np.int64)


def otsu_thresholds3(hist: np.ndarray) -> tuple[float, float]:
    """Otsu's two thresholds of a histogram over [0, 1] split into three classes (multi-level Otsu):
    the bin edges ``(j / B, k / B)``, j < k, that maximise ``sum_c w_c * (mu_c - mu) ** 2``.

    hist (B,) counts -> (low, high). Classes are bins < j, j <= bins < k and bins >= k; bins
    are represented by their centres; ties take the lowest edges. Raises ValueError for a histogram
    with fewer than three non-empty bins.
    """
    hist = np.asarray(hist, dtype=np.float64)
    if np.count_nonzero(hist) < 3:
        raise ValueError("a histogram needs three non-empty bins to have two thresholds")
    bins = hist.size
    centres = (np.arange(bins) + 0.5) / bins
    w = np.concatenate([[0.0], np.cumsum(hist)])  # w[k] = count of bins < k
    m = np.concatenate([[0.0], np.cumsum(hist * centres)])
    j, k = np.meshgrid(np.arange(1, bins), np.arange(1, bins), indexing="ij")  # edges 1..B-1
    w0, w1, w2 = w[j], w[k] - w[j], w[-1] - w[k]
    m0, m1, m2 = m[j], m[k] - m[j], m[-1] - m[k]
    valid = (j < k) & (w0 > 0) & (w1 > 0) & (w2 > 0)
    # sum_c w_c mu_c^2 = sum_c m_c^2 / w_c; the total mean's term is the same for every split.
    score = np.full(j.shape, -np.inf)
    score[valid] = m0[valid] ** 2 / w0[valid] + m1[valid] ** 2 / w1[valid] + m2[valid] ** 2 / w2[valid]
    best = np.unravel_index(int(np.argmax(score)), score.shape)
    return float(j[best] / bins), float(k[best] / bins)


__all__ = ["BINS", "score_histogram", "otsu_thresholds3"]
