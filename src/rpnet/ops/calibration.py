"""Thresholds estimated from the data (what ``auto`` computes; docs/calibration.md).

Pure numpy functions. Without masks: every score these thresholds apply to lies in [0, 1]
(max-normalised CAMs, globally normalised walk scores), so a histogram of :data:`BINS` equal bins
over [0, 1] summarises a whole split in a fixed-size array that ranks can add up.

With a few masks (a calibration split): each candidate label rule gets one confusion matrix per
calibration image (``evidence`` (M candidates, K images, L, L)); the candidate whose matrices
pooled over the images give the best mIoU is chosen (:func:`choose_candidate`), and the
quality of that choice is estimated on images it was not chosen on (:func:`held_out_matrices`)
with a jackknife interval over the images (:func:`jackknife_interval`).
"""

from __future__ import annotations


import numpy as np
from scipy import stats

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


def threshold_confusions(fg_labels: np.ndarray, max_scores: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                         num_labels: int, ignore_index: int = 255) -> np.ndarray:
    """The confusion matrices of one image's label map at every background threshold.

    The rule of IRN's argmax against a constant background score t (:func:`rpnet.ops.cam.cams_to_labels`,
    :func:`rpnet.ops.random_walk.scores_to_labels`): a pixel takes its best class's label where that
    class's score beats t, else background (0); a tie goes to the background.

    fg_labels (H, W) int: the label of each pixel's best class (1..L-1); max_scores (H, W): that
    class's score (float32 compared with float32 thresholds, as the argmax compares them; -inf where
    the image has no tagged class); gt (H, W) labels (``ignore_index`` and labels >= L not counted);
    thresholds (T,) increasing. -> (T, L, L) int64, rows ground truth, columns prediction.
    """
    thresholds = np.asarray(thresholds, dtype=np.float32).reshape(-1)
    if np.any(np.diff(thresholds) <= 0):
        raise ValueError(f"thresholds must increase, got {thresholds.tolist()}")
    gt = np.asarray(gt).astype(np.int64).ravel()
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_labels)
    gt = gt[keep]
    pred = np.asarray(fg_labels).astype(np.int64).ravel()[keep]
    scores = np.asarray(max_scores, dtype=np.float32).ravel()[keep]
    # above[x]: how many thresholds pixel x's score beats; at threshold j it is foreground iff j < above[x].
    above = np.searchsorted(thresholds, scores, side="left")
    n, size = num_labels, thresholds.size
    counts = np.bincount((above * n + gt) * n + pred, minlength=(size + 1) * n * n).reshape(size + 1, n, n)
    beats = np.cumsum(counts[::-1], axis=0)[::-1]  # beats[j]: the pixels that beat more than j - 1 thresholds
    foreground = beats[1:]  # (T, L, L): at threshold j, the pixels with above > j keep their label
    background = np.cumsum(counts, axis=0)[:-1].sum(axis=2)  # (T, L): ground truth of the pixels with above <= j
    matrices = foreground.copy()
    matrices[:, :, 0] += background
    return matrices


def miou_of(matrices: np.ndarray) -> np.ndarray:
    """The mIoU of each confusion matrix of a stack (..., L, L): the mean IoU over the labels that occur
    (in ground truth or prediction), as :meth:`rpnet.metrics.ConfusionMatrix.miou`; 0 for an empty matrix.
    -> (...) float64 in [0, 1]."""
    matrices = np.asarray(matrices, dtype=np.float64)
    tp = np.diagonal(matrices, axis1=-2, axis2=-1)
    union = matrices.sum(-1) + matrices.sum(-2) - tp
    occurs = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=occurs)
    count = occurs.sum(-1)
    return np.divide(iou.sum(-1), count, out=np.zeros(count.shape), where=count > 0)


def choose_candidate(evidence: np.ndarray) -> int:
    """The candidate whose matrices, summed over the images, give the best mIoU; ties: the first.

    evidence (M, K, L, L): candidate m's confusion matrix on image k. -> index into M."""
    return int(np.argmax(miou_of(np.asarray(evidence).sum(axis=1))))


def held_out_matrices(evidence: np.ndarray) -> np.ndarray:
    """Each image scored by the candidate chosen on the other images (leave one out).

    evidence (M, K, L, L) with K >= 2 -> (K, L, L): image k's matrix under
    ``choose_candidate(evidence without image k)``. Their sum estimates what the choice scores on
    images it was not made on: the in-sample best is biased upwards by the choosing itself.
    """
    evidence = np.asarray(evidence)
    if evidence.shape[1] < 2:
        raise ValueError("a held-out estimate needs at least two images")
    total = evidence.sum(axis=1)
    chosen = [int(np.argmax(miou_of(total - evidence[:, k]))) for k in range(evidence.shape[1])]
    return np.stack([evidence[m, k] for k, m in enumerate(chosen)])


def jackknife_interval(per_image: np.ndarray, level: float = 0.9) -> tuple[float, float]:
    """A ``level`` interval for the pooled mIoU of K images' confusion matrices: the pooled mIoU plus or minus
    Student's t quantile (K - 1 degrees of freedom) times its jackknife standard error, clipped to [0, 1].

    per_image (K, L, L), K >= 2. With v_k the pooled mIoU without image k and v its mean, the standard error
    is sqrt((K - 1) / K * sum_k (v_k - v) ** 2). (A percentile bootstrap over the images held the true figure
    in 71-87 % of 60 draws of ten images per design, not 90 %; this interval in 82-95 %: docs/calibration.md.)
    -> (low, high).
    """
    per_image = np.asarray(per_image, dtype=np.float64)
    count = per_image.shape[0]
    if count < 2:
        raise ValueError("an interval needs at least two images")
    total = per_image.sum(axis=0)
    estimate = float(miou_of(total))
    left_out = miou_of(total[None] - per_image)
    error = float(np.sqrt((count - 1) / count * np.sum((left_out - left_out.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + level / 2, count - 1)) * error
    return max(0.0, estimate - half), min(1.0, estimate + half)


__all__ = ["BINS", "score_histogram", "otsu_thresholds3", "threshold_confusions", "miou_of", "choose_candidate",
           "held_out_matrices", "jackknife_interval"]
