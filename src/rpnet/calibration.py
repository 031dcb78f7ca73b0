"""Thresholds chosen from the data: what ``auto`` means for every threshold key.

A stage that applies a threshold to CAMs or scores computes its label-free estimate from its own
inputs (:mod:`rpnet.ops.calibration` holds the maths). Where the user declares a calibration split
(``data.calibration_split``: a handful of training images with masks), the stage instead tries every
value of :data:`MASK_CANDIDATES` on those images and takes the one whose labels score best there
(:func:`choose_on_masks`), and estimates its output's mIoU from them with a 90 % interval. It
uses that value (or the label-free estimate) where the config says ``auto`` and the configured
number otherwise, and writes what it did to ``WORK_DIR/<stage>/calibration.json``::

    {"values":    {"bg_threshold": 0.31},      # what the stage used
     "estimates": {"bg_threshold": 0.23},      # the label-free estimate, always computed
     "sources":   {"bg_threshold": "masks"},   # "masks", "auto" (label-free) or "config"
     "method":    "masks",                     # or "label-free"
     "masks":     {"split": ..., "k": 10, "ids": [...], "candidates": {...}, "scores": {...},
                   "estimate": {"miou": ..., "low": ..., "high": ...}},   # with a calibration split only
     "evidence":  {...}}                       # what the label-free estimate was computed from

``rpnet status`` and the report show the values; ``docs/calibration.md`` explains each rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .config import AUTO, Config, Threshold
from .data.build import calibration_dataset
from .data.dataset import TaggedImages
from .errors import RpnetError, OutputError
from .io import read_json, write_json
from .layout import CALIBRATION as CALIBRATION_FILE, WorkDir, load_cams
from .ops.calibration import (BINS, choose_candidate, held_out_matrices, miou_of,
                              jackknife_interval, otsu_thresholds3, score_histogram,
                              threshold_confusions)

# The values a calibration split chooses a threshold from: 0.01, 0.02, ..., 0.99.
MASK_CANDIDATES = np.round(np.arange(1, 100) * 0.01, 2)
ESTIMATE_LEVEL = 0.9  # the estimate's interval: 90 % (rpnet.ops.calibration.jackknife_interval)


def resolve(configured: Threshold, estimate: float) -> tuple[float, str]:
    """(the value to use, its source): the estimate (rounded to 4 decimals, as calibration.json
    holds it) for ``auto``, else the configured number."""
    return (round(float(estimate), 4), "auto") if configured == AUTO else (float(configured), "config")


@dataclass(frozen=True)
class MaskChoice:
    """One choice made on the calibration split's masks.

    candidates: what was tried (thresholds, or labels such as ``"walk 0.25"``); scores: the mIoU (%)
    of each on the calibration images, their confusion matrices pooled; index: the one chosen (the
    best; ties: the first); estimate: the mIoU (%) of the chosen rule's labels estimated on images it
    was not chosen on, ``{"miou", "low", "high"}`` (a 90 % jackknife interval), None with one image.
    """

    candidates: tuple
    scores: tuple[float, ...]
    index: int
    estimate: dict[str, float] | None

    @property
    def chosen(self) -> Any:
        return self.candidates[self.index]


@dataclass(frozen=True)
class MaskCalibration:
    """What a stage chose on the calibration split, for its calibration.json: the split, its image ids,
    the chosen value of each ``auto`` key (``values``), and each choice's candidates and scores."""

    split: str
    ids: tuple[str, ...]
    values: dict[str, float] = field(default_factory=dict)
    choices: dict[str, MaskChoice] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"split": self.split, "k": len(self.ids), "ids": list(self.ids),
                "candidates": {k: list(c.candidates) for k, c in self.choices.items()},
                "scores": {k: list(c.scores) for k, c in self.choices.items()},
                "estimates": {k: c.estimate for k, c in self.choices.items()}, **self.notes}


def write_calibration(folder: Path, configured: Mapping[str, Threshold], estimates: Mapping[str, float | None],
                      evidence: Mapping[str, Any] | None = None, masks: MaskCalibration | None = None) -> dict[str, Any]:
    """Resolve each key of ``estimates`` against ``configured`` and write ``folder/calibration.json``.

    ``estimates``: the label-free estimate of each key (None where the data gives none); ``masks``: what the calibration split chose
    (its ``values`` win over the estimates for ``auto`` keys). Returns the values used, by key
    (rounded to 4 decimals, as written, so that a stage that reads them back gets exactly what this
    one used).
    """
    values, sources = resolve_values(configured, estimates, masks)
    record = {"values": values, "estimates": {k: None if v is None else round(float(v), 4) for k, v in estimates.items()},
              "sources": sources, "method": "label-free" if masks is None else MASKS}
    if masks is not None:
        record["masks"] = masks.record()
    write_json(Path(folder) / CALIBRATION_FILE, {**record, "evidence": dict(evidence or {})})
    return values


MASKS = "masks"  # the source of a value chosen on the calibration split, and that method's name


def resolve_values(configured: Mapping[str, Threshold], estimates: Mapping[str, float | None],
                   masks: MaskCalibration | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """(value, source) of each key of ``estimates``, as :func:`write_calibration` writes them: the
    configured number ("config"); for ``auto`` the value the calibration split chose ("masks"), else the
    label-free estimate ("auto"). Every rank computes them; only rank 0 writes the file."""
    values, sources = {}, {}
    for key, estimate in estimates.items():
        if configured[key] == AUTO and masks is not None and key in masks.values:
            value, source = round(float(masks.values[key]), 4), MASKS
        else:
            value, source = resolve(configured[key], estimate)
        values[key], sources[key] = value, source
    return values, sources


ESTIMATES = {"cam": "CAM", "pseudo": "pseudo masks"}  # metrics.json prefix of each estimate -> what it rates


def estimate_text(metrics: Mapping[str, Any], prefix: str) -> str | None:
    """``41.2 (90 % interval 35.1-47.9)``: the estimate ``{prefix}_miou_estimate`` of a metrics.json with its
    interval; None where it has none."""
    keys = [f"{prefix}_miou_estimate{end}" for end in ("", "_low", "_high")]
    if not all(isinstance(metrics.get(key), (int, float)) for key in keys):
        return None
    value, low, high = (float(metrics[key]) for key in keys)
    return f"{value:.1f} ({ESTIMATE_LEVEL:.0%} interval {low:.1f}-{high:.1f})".replace("%", " %")


def estimate_metrics(prefix: str, choice: MaskChoice) -> dict[str, float]:
    """``{prefix}_miou_estimate``, ``..._low``, ``..._high`` for metrics.json from a choice's estimate
    ({} without one)."""
    if choice.estimate is None:
        return {}
    return {f"{prefix}_miou_estimate": choice.estimate["miou"], f"{prefix}_miou_estimate_low": choice.estimate["low"],
            f"{prefix}_miou_estimate_high": choice.estimate["high"]}


def calibration_images(cfg: Config) -> TaggedImages | None:
    """The calibration split's images with their masks (:func:`rpnet.data.build.calibration_dataset`);
    None without ``data.calibration_split``."""
    return calibration_dataset(cfg.data)


def best_class(scores: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scores (K, H, W) of an image's tagged classes keys (K,) -> (the label of each pixel's best class
    (H, W) int64, its score (H, W) float32); -inf scores where the image has no tagged class."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape[0] == 0:
        return np.zeros(scores.shape[1:], dtype=np.int64), np.full(scores.shape[1:], -np.inf, dtype=np.float32)
    best = scores.argmax(axis=0)
    return np.asarray(keys, dtype=np.int64)[best] + 1, np.take_along_axis(scores, best[None], 0)[0]


def label_evidence(images: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], thresholds: np.ndarray,
                   num_labels: int) -> np.ndarray:
    """(T, K, L, L): for each threshold, the confusion matrix of each image's labels.

    images: per image (scores (C_k, H, W), keys (C_k,), ground truth (H, W)), labelled by the argmax
    against a constant background score (:func:`rpnet.ops.calibration.threshold_confusions`)."""
    matrices = [threshold_confusions(*best_class(scores, keys), gt, thresholds, num_labels)
                for scores, keys, gt in images]
    return np.stack(matrices, axis=1)


def choose_on_masks(evidence: np.ndarray, candidates: Iterable) -> MaskChoice:
    """The best of ``candidates`` on the calibration images and the estimate of what it scores elsewhere.

    evidence (M, K, L, L): candidate m's confusion matrix on calibration image k. The estimate is the
    pooled mIoU of each image under the candidate chosen on the other images
    (:func:`rpnet.ops.calibration.held_out_matrices`), with a :data:`ESTIMATE_LEVEL` interval
    (:func:`rpnet.ops.calibration.jackknife_interval`); None with fewer than two images.
    """
    candidates = tuple(candidates)
    if len(candidates) != evidence.shape[0]:
        raise ValueError(f"{len(candidates)} candidates but evidence for {evidence.shape[0]}")
    scores = tuple(round(float(v) * 100, 3) for v in miou_of(evidence.sum(axis=1)))
    estimate = None
    if evidence.shape[1] >= 2:
        held = held_out_matrices(evidence)
        low, high = jackknife_interval(held, ESTIMATE_LEVEL)
        estimate = {"miou": round(float(miou_of(held.sum(axis=0))) * 100, 2), "low": round(low * 100, 2),
                    "high": round(high * 100, 2)}
    return MaskChoice(candidates, scores, choose_candidate(evidence), estimate)


def threshold_candidates(configured: Threshold) -> np.ndarray:
    """The thresholds a calibration split tries for a key: :data:`MASK_CANDIDATES` for ``auto``, else the
    configured number alone (a value given by the user wins; it is still scored and estimated)."""
    return MASK_CANDIDATES if configured == AUTO else np.array([float(configured)])


def cam_evidence(cfg: Config, images: TaggedImages, thresholds: np.ndarray) -> np.ndarray:
    """:func:`label_evidence` of the calibration images' full-size CAMs (make-cam's files)."""
    work = WorkDir(cfg.work_dir)

    def triples():
        for i, record in enumerate(images.records):
            path = work.cam(record.id)
            if not path.exists():
                raise OutputError(f"no CAM for calibration image {record.id} at {path}: run make-cam first", path)
            cam = load_cams(path)
            gt = images[i]["mask"]
            if cam.high_res.shape[1:] != gt.shape:
                raise RpnetError(f"{path}: CAM size {cam.high_res.shape[1:]} differs from the mask's {gt.shape}")
            yield cam.high_res, cam.keys, gt

    return label_evidence(triples(), thresholds, images.num_classes + 1)


def cam_threshold_on_masks(cfg: Config, images: TaggedImages, configured: Threshold) -> MaskChoice:
    """The CAM background threshold chosen on the calibration images (``configured``: its config key;
    a number is kept and only scored). eval-cam, make-ir-label and make-pseudo all choose it here."""
    thresholds = threshold_candidates(configured)
    return choose_on_masks(cam_evidence(cfg, images, thresholds), thresholds.tolist())


def read_calibration(folder: Path) -> dict[str, Any]:
    """``folder/calibration.json``; an error naming the file when it is missing or unreadable."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        raise RpnetError(f"no calibration at {path}: run the stage that writes it first")
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        raise RpnetError(f"{path} is unreadable ({exc}): rerun the stage that writes it") from None
    if not isinstance(record, dict) or not isinstance(record.get("values"), dict):
        raise RpnetError(f"{path} has no 'values': rerun the stage that writes it")
    return record


def calibrated_value(folder: Path, key: str) -> float:
    """The value a stage used for ``key``, from its calibration.json."""
    values = read_calibration(folder)["values"]
    if key not in values:
        raise RpnetError(f"{Path(folder) / CALIBRATION_FILE} has no value for {key!r}")
    return float(values[key])


def cam_histogram(cam_paths: list[Path]) -> np.ndarray:
    """The histogram (:data:`rpnet.ops.calibration.BINS`,) of the tagged classes' full-size CAM values
    of these CAM files (this process's; under torchrun the caller sums the ranks')."""
    histogram = np.zeros(BINS, dtype=np.int64)
    for path in cam_paths:
        if not path.exists():
            raise OutputError(f"no CAM at {path}: run make-cam first", path)
        histogram += score_histogram(load_cams(path).high_res.astype(np.float32))
    return histogram


def lower_edge_estimate(histogram: np.ndarray, what: str, needed: bool = True) -> float | None:
    """The label-free estimate of a threshold on CAMs or walked scores from their value histogram: the lower
    edge of its three-class Otsu split (near-zero background | middle band | strong evidence);
    docs/calibration.md. Where the histogram has fewer than three non-empty bins: an error naming the
    key ``what`` when the estimate is ``needed``, else None."""
    if np.count_nonzero(histogram) < 3:
        if needed:
            raise RpnetError(f"the scores are (nearly) constant: nothing to calibrate {what} from; set it to a number")
        return None
    return otsu_thresholds3(histogram)[0]


def cam_threshold(cfg: Config) -> float:
    """``eval_cam.threshold``, or for ``auto`` the threshold eval-cam calibrated (its calibration.json)."""
    if cfg.eval_cam.threshold != AUTO:
        return float(cfg.eval_cam.threshold)
    return calibrated_value(WorkDir(cfg.work_dir).stage("eval-cam"), "cam_threshold")


def calibration_entries(path: Path) -> list[tuple[str, float, str]]:
    """(key, value used, "auto" or "config") for each threshold of a calibration.json; [] when it is
    missing or unreadable (``rpnet status`` and the report show what there is)."""
    try:
        record = read_json(path)
        return [(key, float(value), str(record["sources"][key])) for key, value in record["values"].items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def calibration_summary(path: Path) -> str:
    """``bg_threshold 0.185 (auto), fg_threshold 0.52 (auto)``: the entries of a calibration.json as text,
    and the label source make-pseudo chose on the calibration masks (``labels from the cam, 41.2 against
    the walk's 30.5``)."""
    parts = [f"{key} {value:g} ({source})" for key, value, source in calibration_entries(path)]
    try:
        masks = read_json(path).get("masks") or {}
        scores = masks.get("source_scores") or {}
        if masks.get("source") in scores:
            chosen = masks["source"]
            others = [f"the {name}'s {score:.1f}" for name, score in scores.items() if name != chosen]
            parts.append(f"labels from the {chosen} ({scores[chosen]:.1f} on {masks.get('k')} masks"
                         + (f" against {', '.join(others)})" if others else ")"))
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return ", ".join(parts)


__all__ = ["CALIBRATION_FILE", "MASKS", "MASK_CANDIDATES", "ESTIMATES", "ESTIMATE_LEVEL", "MaskChoice",
           "MaskCalibration", "resolve", "resolve_values", "write_calibration", "read_calibration", "calibrated_value",
           "calibration_images", "best_class", "label_evidence", "choose_on_masks", "threshold_candidates",
           "cam_evidence", "cam_threshold_on_masks", "estimate_metrics", "estimate_text", "cam_histogram",
           "lower_edge_estimate", "cam_threshold", "calibration_entries", "calibration_summary"]
