"""Score the CAMs against ground-truth masks (docs/method.md stage 3).

The background gets a constant score (the threshold) and every pixel takes the argmax over
background and the tagged classes' max-normalised CAMs. ``cam_miou`` is scored at
``eval_cam.threshold``: with ``auto`` (the default) a threshold calibrated from the CAMs alone,
without ground truth (docs/calibration.md): the lower edge of a three-class Otsu split of the
tagged classes' CAM values over the split (:func:`rpnet.calibration.lower_edge_estimate`),
written to ``WORK_DIR/eval_cam/calibration.json``. With a calibration split
(``data.calibration_split``) the threshold is instead the one that scores best on its masks, and
``cam_miou_estimate`` (``_low``, ``_high``: a 90 % interval) estimates from those images
what the CAMs score elsewhere (:func:`rpnet.calibration.cam_threshold_on_masks`); every figure is
then scored on the other images of the split, never on the calibration images. The threshold is also swept (0.05 to 0.95 by
default) and the best one, chosen by looking at the ground truth, reported beside it as
``cam_miou_best`` / ``cam_threshold_best``: an oracle, the ceiling of any rule.

Adds ``cam_miou``, ``cam_threshold``, ``cam_miou_best``, ``cam_threshold_best``, ``cam_per_class`` (at
``cam_threshold``) and ``cam_images`` (how many images they were scored on) to ``WORK_DIR/metrics.json``; writes
``WORK_DIR/eval_cam/sweep.json`` (mIoU per threshold, for the report's curve) and example
pictures in ``WORK_DIR/eval_cam/pictures/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import scored_dataset, stage_dir
from ..data.build import build_dataset
from ..data.synthetic import BG_CONTEXT, BG_OTHER, PART_DIR, PART_BODY, PART_HEAD
from ..calibration import (MaskCalibration, calibration_images, cam_histogram, lower_edge_estimate,
                           cam_threshold_on_masks, estimate_metrics, resolve_values, write_calibration)
from ..config import AUTO, Config
from ..engine.distributed import all_reduce_sum, barrier, shard, world
from ..errors import RpnetError, OutputError
from ..io import load_mask, write_json
from ..layout import WorkDir, load_cams, update_metrics
from ..metrics import ConfusionMatrix, RegionRates, format_iou_table, per_class_iou
from ..ops.cam import cams_to_labels
from ..viz import colorize, overlay, picture_indices, save_panels

log = logging.getLogger(__name__)

NAME = "eval-cam"


def sweep_thresholds(start: float, stop: float, step: float) -> np.ndarray:
    """start, start + step, ..., stop (inclusive), rounded to avoid 0.30000000000000004."""
    count = int(round((stop - start) / step)) + 1
    return np.round(start + step * np.arange(count), 6)


def save_picture(path: Path, image: np.ndarray, cams: np.ndarray, keys: np.ndarray, gt: np.ndarray,
                 threshold: float, class_names: Sequence[str]) -> Path:
    """Image, each tagged class's CAM as a heat map, the thresholded CAM mask and the ground truth."""
    panels = [("image", image, None)]
    panels += [(f"CAM {class_names[k + 1]}", overlay(image, c), None) for k, c in zip(keys, cams)]
    panels += [(f"CAM mask (t={threshold:g})", colorize(cams_to_labels(cams, keys, threshold)), None),
               ("ground truth", colorize(gt), None)]
    return save_panels(path, panels)


def calibrate(cfg: Config, split: str, record_ids: list[str]) -> tuple[float, dict]:
    """The CAM threshold of this run and the metrics of its estimate: ``eval_cam.threshold``'s number, or
    for ``auto`` the one chosen on the calibration split's masks, or without one the label-free estimate
    from the CAMs of ``record_ids`` (all ranks'); written to ``eval_cam/calibration.json``."""
    work = WorkDir(cfg.work_dir)
    histogram = all_reduce_sum(cam_histogram([work.cam(i) for i in record_ids]))
    configured = cfg.eval_cam.threshold
    masks, metrics = None, {}
    images = calibration_images(cfg)
    if images is not None:  # every rank chooses on the same few images: no reduction needed
        choice = cam_threshold_on_masks(cfg, images, configured)
        masks = MaskCalibration(cfg.data.calibration_split, tuple(images.ids), {"cam_threshold": choice.chosen},
                                {"cam_threshold": choice})
        metrics = estimate_metrics("cam", choice)
    # The label-free estimate, recorded beside a configured number or a choice made on masks.
    estimate = lower_edge_estimate(histogram, "eval_cam.threshold", needed=configured == AUTO and masks is None)
    configured_keys, estimates = {"cam_threshold": configured}, {"cam_threshold": estimate}
    if world().is_main:
        write_calibration(work.stage(NAME), configured_keys, estimates,
                          {"split": split, "cam_value_histogram": histogram.tolist()}, masks)
    values, _ = resolve_values(configured_keys, estimates, masks)
    return values["cam_threshold"], metrics


# metrics.json key -> region of the synthetic generator's part maps (rpnet.data.synthetic.part_map), at the
# threshold cam_miou is scored at: recall of an object's distinctive part and of the rest of it, and the
# share of co-occurring-context and of other background pixels labelled foreground (false positives).
REGION_METRICS = {"cam_part_recall": PART_HEAD, "cam_body_recall": PART_BODY, "cam_context_fp": BG_CONTEXT,
                  "cam_background_fp": BG_OTHER}


def part_dir(cfg: Config) -> Path | None:
    """``DATA_ROOT/SegmentationPart/`` where a dataset written by ``rpnet synth`` (VOC layout) has it, else None."""
    folder = Path(cfg.data.root) / PART_DIR if cfg.data.root is not None else None
    return folder if cfg.data.format == "voc" and folder is not None and folder.is_dir() else None


def run(cfg: Config, *, resume: bool = False) -> dict:
    """Score the CAMs of ``eval_cam.split`` (default: the train split); return the metrics added."""
    stage_dir(cfg, NAME)
    split = cfg.eval_cam.split or cfg.data.train_split
    dataset = scored_dataset(cfg, split, "CAMs")
    work = WorkDir(cfg.work_dir)
    current = world()
    # Calibrated on every image of the split, as make-ir-label does, not only on those with masks.
    threshold, estimate = calibrate(cfg, split, shard(build_dataset(cfg.data, split).ids, current))
    if estimate and current.is_main:
        print(f"CAM mIoU estimated from the {cfg.data.calibration_split!r} masks at threshold {threshold:g}: "
              f"{estimate['cam_miou_estimate']:.1f} (90 % interval {estimate['cam_miou_estimate_low']:.1f}-"
              f"{estimate['cam_miou_estimate_high']:.1f})")
    if not len(dataset):  # every image with a mask is a calibration image: the estimate is the only figure
        if current.is_main:
            update_metrics(cfg.work_dir, cam_threshold=threshold, cam_images=0, **estimate)
            print(f"eval-cam: no image of {split!r} outside the calibration split has a mask: nothing to score")
        barrier()
        return {"cam_threshold": threshold, "cam_images": 0, **estimate}
    thresholds = sweep_thresholds(*cfg.eval_cam.sweep)
    num_labels = dataset.num_classes + 1
    chosen = ConfusionMatrix(num_labels)
    matrices = [ConfusionMatrix(num_labels) for _ in thresholds]
    pictures = set(picture_indices(len(dataset), cfg.eval_cam.num_pictures))
    parts_dir = part_dir(cfg)
    regions = RegionRates(BG_OTHER, objects=(PART_HEAD, PART_BODY)) if parts_dir is not None else None
    shown = []
    for i in shard(range(len(dataset)), current):  # under torchrun each rank scores its share
        record = dataset.records[i]
        path = work.cam(record.id)
        if not path.exists():
            raise OutputError(f"no CAM for image {record.id} at {path}: run make-cam first", path)
        cam = load_cams(path)
        sample = dataset[i]
        gt, high = sample["mask"], cam.high_res.astype(np.float32)
        if high.shape[1:] != gt.shape:
            raise RpnetError(f"{path}: CAM size {high.shape[1:]} differs from the mask's {gt.shape}")
        labels = cams_to_labels(high, cam.keys, threshold)
        chosen.update(gt, labels)
        if regions is not None:
            regions.update(gt, labels, load_mask(parts_dir / f"{record.id}.png"))
        for t, cm in zip(thresholds, matrices):
            cm.update(gt, cams_to_labels(high, cam.keys, float(t)))
        if i in pictures:
            shown.append((record.id, sample["image"], high, cam.keys, gt))
    summed = all_reduce_sum(np.stack([cm.matrix for cm in [chosen, *matrices]]))
    for cm, matrix in zip([chosen, *matrices], summed):
        cm.matrix = matrix
    miou = chosen.miou() * 100
    mious = [cm.miou() * 100 for cm in matrices]
    best = int(np.argmax(mious))
    per_class = per_class_iou(chosen, dataset.class_names)
    for image_id, image, high, keys, gt in shown:
        save_picture(work.pictures(NAME) / f"{image_id}.png", image, high, keys, gt, threshold, dataset.class_names)
    metrics = {"cam_miou": round(miou, 2), "cam_threshold": threshold, "cam_miou_best": round(mious[best], 2),
               "cam_threshold_best": float(thresholds[best]), "cam_per_class": per_class, "cam_images": len(dataset),
               **estimate}
    if regions is not None:
        regions.counts = all_reduce_sum(regions.counts)
        rates = regions.rates()
        metrics.update({key: None if np.isnan(rates[region]) else round(float(rates[region]) * 100, 2)
                        for key, region in REGION_METRICS.items()})
    if current.is_main:
        write_json(work.cam_sweep, {"thresholds": thresholds.tolist(), "miou": [round(m, 3) for m in mious],
                                            "threshold": threshold, "threshold_miou": round(miou, 3)})
        update_metrics(cfg.work_dir, **metrics)
        source = ("configured" if cfg.eval_cam.threshold != AUTO else
                  "chosen on the calibration masks" if estimate or cfg.data.calibration_split else "calibrated")
        print(format_iou_table(per_class, miou, f"CAM on {split} ({len(dataset)} images), {source} background "
                                                f"threshold {threshold:g} (best by the ground truth: "
                                                f"{thresholds[best]:g}, {mious[best]:.1f})"))
        if regions is not None:
            print("which pixels the CAM finds (%): distinctive part {cam_part_recall}, rest of the object "
                  "{cam_body_recall}; background labelled foreground: co-occurring context {cam_context_fp}, "
                  "other {cam_background_fp}".format(**metrics))
    barrier()
    return metrics
