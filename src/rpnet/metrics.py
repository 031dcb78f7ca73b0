"""Segmentation metrics: a confusion matrix by bincount, IoU per class, mIoU."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .io import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates an (N, N) matrix, rows = ground truth, columns = prediction.

    Pixels whose ground truth is ``ignore_index`` (or outside 0..N-1) are not counted. Matrices
    from several workers or ranks add up (``merge``/``+=`` on ``.matrix``).
    """

    def __init__(self, num_labels: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_labels, num_labels), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        gt = np.asarray(gt).astype(np.int64).ravel()
        pred = np.asarray(pred).astype(np.int64).ravel()
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth has {gt.size} pixels, prediction {pred.size}")
        keep = (gt != self.ignore_index) & (gt >= 0) & (gt < self.num_labels)
        pred = np.clip(pred[keep], 0, self.num_labels - 1)
        n = self.num_labels
        self.matrix += np.bincount(gt[keep] * n + pred, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """IoU per label: TP / (TP + FP + FN); NaN for a label absent from both GT and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        denom = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / denom, np.nan)

    def miou(self) -> float:
        """Mean IoU over the labels that occur (in GT or prediction), in [0, 1]."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0

    def never_predicted(self) -> list[int]:
        """The labels that occur in the ground truth and that the prediction never gives (a column of zeros)."""
        return [int(i) for i in np.flatnonzero((self.matrix.sum(1) > 0) & (self.matrix.sum(0) == 0))]

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0


class RegionRates:
    """Which pixels a label map finds and which it spills onto, by region of a part map.

    ``parts`` (H, W) labels each pixel with a region 1..R (0 or ``ignore_index``: not counted; the
    synthetic generator's :func:`rpnet.data.synthetic.part_map`: distinctive part, rest of the object,
    co-occurring background, other background). Per region it counts the pixels and the *hits*: on an
    object region (``objects``) a pixel whose prediction is its ground-truth class, on a background
    region one predicted as any foreground class (a false positive). ``counts`` is (R + 1, 2)
    [pixels, hits]; counts from several images or ranks add up.
    """

    def __init__(self, num_regions: int, objects: Sequence[int], ignore_index: int = IGNORE_INDEX) -> None:
        self.objects = frozenset(objects)
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_regions + 1, 2), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray, parts: np.ndarray) -> None:
        gt, pred, parts = (np.asarray(a).astype(np.int64).ravel() for a in (gt, pred, parts))
        if not gt.shape == pred.shape == parts.shape:
            raise ValueError(f"ground truth, prediction and parts have {gt.size}, {pred.size}, {parts.size} pixels")
        keep = (parts > 0) & (parts < len(self.counts)) & (parts != self.ignore_index) & (gt != self.ignore_index)
        on_object = np.isin(parts, list(self.objects))
        hit = np.where(on_object, pred == gt, (pred != 0) & (pred != self.ignore_index))
        n = len(self.counts)
        self.counts[:, 0] += np.bincount(parts[keep], minlength=n)
        self.counts[:, 1] += np.bincount(parts[keep], weights=hit[keep], minlength=n).astype(np.int64)

    def rates(self) -> np.ndarray:
        """(R + 1,) hits / pixels per region (index 0 unused); NaN for a region with no pixel."""
        pixels = self.counts[:, 0].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pixels > 0, self.counts[:, 1] / pixels, np.nan)


def per_class_iou(cm: ConfusionMatrix, class_names: Sequence[str]) -> dict[str, float | None]:
    """{name: IoU in percent} (the ``*_per_class`` entries of metrics.json); None where the class never occurs."""
    return {name: (None if np.isnan(v) else round(float(v) * 100, 2)) for name, v in zip(class_names, cm.iou())}


def format_iou_table(per_class: dict[str, float | None], miou: float, title: str = "") -> str:
    """A plain-text table of per-class IoU (percent) and the mean, for the terminal."""
    width = max([len(n) for n in per_class] + [4])
    lines = [title] if title else []
    lines += [f"{'class':<{width}}  IoU %", f"{'-' * width}  -----"]
    for name, iou in per_class.items():
        lines.append(f"{name:<{width}}  {'  n/a' if iou is None else f'{iou:5.1f}'}")
    lines += [f"{'-' * width}  -----", f"{'mIoU':<{width}}  {miou:5.1f}"]
    return "\n".join(lines)
