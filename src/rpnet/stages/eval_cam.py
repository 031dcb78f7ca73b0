"""Stage 3: score the CAMs against ground-truth masks (METHOD.md stage 3).

The background gets a constant score (the threshold) and every pixel takes the argmax over
background and the tagged classes' max-normalised CAMs. The threshold is swept (0.05 to
0.60 by default) and the best one reported. Adds ``cam_miou``, ``cam_threshold`` and
``cam_per_class`` to ``WORK_DIR/metrics.json``; writes ``WORK_DIR/eval_cam/sweep.json``
(mIoU per threshold, for the report's curve) and example pictures in
``WORK_DIR/eval_cam/pictures/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import scored_dataset, stage_dir
from ..config import Config
from ..engine.distributed import all_reduce_sum, barrier, shard, world
from ..errors import RpnetError
from ..io import load_npz, update_metrics, write_json
from ..metrics import ConfusionMatrix, format_iou_table, per_class_iou
from ..ops.cam import cams_to_labels
from ..viz import colorize, overlay, save_panels
from .make_cam import cam_dir

log = logging.getLogger(__name__)

STAGE_DIR = "eval_cam"


def sweep_thresholds(start: float, stop: float, step: float) -> np.ndarray:
    """start, start + step, ..., stop (inclusive), rounded to avoid 0.30000000000000004."""
    count = int(round((stop - start) / step)) + 1
    return np.round(start + step * np.arange(count), 6)


def picture_indices(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``n`` images (the same ones on every run)."""
    return sorted(set(np.linspace(0, n - 1, num=min(count, n)).round().astype(int).tolist())) if n else []


def save_picture(path: Path, image: np.ndarray, cams: np.ndarray, keys: np.ndarray, gt: np.ndarray,
                 threshold: float, class_names: Sequence[str]) -> Path:
    """Image, each tagged class's CAM as a heat map, the thresholded CAM mask and the ground truth."""
    panels = [("image", image, None)]
    panels += [(f"CAM {class_names[k + 1]}", overlay(image, c), None) for k, c in zip(keys, cams)]
    panels += [(f"CAM mask (t={threshold:g})", colorize(cams_to_labels(cams, keys, threshold)), None),
               ("ground truth", colorize(gt), None)]
    return save_panels(path, panels)


def run(cfg: Config, *, resume: bool = False) -> dict:
    """Score the CAMs of ``eval_cam.split`` (default: the train split); return the metrics added."""
    out_dir = stage_dir(cfg, STAGE_DIR)
    split = cfg.eval_cam.split or cfg.data.train_split
    dataset = scored_dataset(cfg, split, "CAMs")
    cams_root = cam_dir(cfg.work_dir)
    thresholds = sweep_thresholds(*cfg.eval_cam.sweep)
    num_labels = dataset.num_classes + 1
    matrices = [ConfusionMatrix(num_labels) for _ in thresholds]
    pictures = set(picture_indices(len(dataset), cfg.eval_cam.num_pictures))
    shown = []
    current = world()
    for i in shard(range(len(dataset)), current):  # under torchrun each rank scores its share
        record = dataset.records[i]
        path = cams_root / f"{record.id}.npz"
        if not path.exists():
            raise RpnetError(f"no CAM for image {record.id} at {path}: run make-cam first")
        cam = load_npz(path)
        sample = dataset[i]
        gt, high = sample["mask"], cam["high_res"].astype(np.float32)
        if high.shape[1:] != gt.shape:
            raise RpnetError(f"{path}: CAM size {high.shape[1:]} differs from the mask's {gt.shape}")
        for t, cm in zip(thresholds, matrices):
            cm.update(gt, cams_to_labels(high, cam["keys"], float(t)))
        if i in pictures:
            shown.append((record.id, sample["image"], high, cam["keys"], gt))
    for cm, summed in zip(matrices, all_reduce_sum(np.stack([cm.matrix for cm in matrices]))):
        cm.matrix = summed
    mious = [cm.miou() * 100 for cm in matrices]
    best = int(np.argmax(mious))
    per_class = per_class_iou(matrices[best], dataset.class_names)
    for image_id, image, high, keys, gt in shown:  # drawn at the best threshold, known only now
        save_picture(out_dir / "pictures" / f"{image_id}.png", image, high, keys, gt, float(thresholds[best]),
                     dataset.class_names)
    metrics = {"cam_miou": round(mious[best], 2), "cam_threshold": float(thresholds[best]), "cam_per_class": per_class}
    if current.is_main:
        write_json(out_dir / "sweep.json", {"thresholds": thresholds.tolist(), "miou": [round(m, 3) for m in mious]})
        update_metrics(cfg.work_dir, **metrics)
        print(format_iou_table(per_class, mious[best],
                               f"CAM on {split} ({len(dataset)} images), best background threshold {thresholds[best]:g}"))
    barrier()
    return metrics


main = run
