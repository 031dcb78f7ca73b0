"""Stage 7: score the pseudo masks against ground-truth masks (docs/method.md stage 7).

Scores the masks make-pseudo wrote (what train-seg learns from) on the split's images that have
masks, the calibration split's left out. Adds ``pseudo_miou`` (percent), ``pseudo_per_class`` and
``pseudo_images`` (how many images were scored) to ``WORK_DIR/metrics.json`` and
writes example pictures to ``WORK_DIR/eval_pseudo/pictures/``: the image, the CAM mask (at
the CAM threshold eval-cam scores: ``eval_cam.threshold``, or make-pseudo's calibration for ``auto``),
the boundary map, the pseudo mask and the ground truth. The CAM and boundary panels are left
out for an image whose CAM or boundary file is not there (masks copied in from elsewhere).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .common import scored_dataset, stage_dir
from ..calibration import cam_threshold
from ..config import Config
from ..engine.distributed import all_reduce_sum, barrier, shard, world
from ..errors import RpnetError
from ..io import load_mask
from ..layout import WorkDir, load_boundary, load_cams, update_metrics
from ..metrics import ConfusionMatrix, format_iou_table, per_class_iou
from ..ops.cam import cams_to_labels
from ..viz import colorize, picture_indices, save_panels

log = logging.getLogger(__name__)

NAME = "eval-pseudo"


def save_picture(path: Path, cfg: Config, image_id: str, image: np.ndarray, pseudo: np.ndarray, gt: np.ndarray,
                 threshold: float) -> Path:
    """One row of panels: image, CAM mask, boundary map, pseudo mask, ground truth."""
    panels = [("image", image, None)]
    work = WorkDir(cfg.work_dir)
    cam_path = work.cam(image_id)
    if cam_path.exists():
        cam = load_cams(cam_path)
        labels = cams_to_labels(cam.high_res.astype(np.float32), cam.keys, threshold)
        panels.append((f"CAM mask (t={threshold:g})", colorize(labels), None))
    edge_path = work.boundaries / f"{image_id}.png"
    if edge_path.exists():
        panels.append(("boundary", load_boundary(edge_path), "gray"))
    panels += [("pseudo mask", colorize(pseudo), None), ("ground truth", colorize(gt), None)]
    return save_panels(path, panels)


def run(cfg: Config, *, resume: bool = False) -> dict:
    """Score the pseudo masks of ``eval_pseudo.split`` (default: the train split); return the metrics added."""
    stage_dir(cfg, NAME)
    work = WorkDir(cfg.work_dir)
    split = cfg.eval_pseudo.split or cfg.data.train_split
    dataset = scored_dataset(cfg, split, "pseudo masks")
    masks = work.pseudo_masks
    if not len(dataset):
        if world().is_main:
            print(f"eval-pseudo: no image of {split!r} outside the calibration split has a mask: nothing to score "
                  "(make-pseudo's pseudo_miou_estimate is the figure)")
        barrier()
        return {}
    missing = [r.id for r in dataset.records if not (masks / f"{r.id}.png").exists()]
    if missing:
        raise RpnetError(f"{len(missing)} of {len(dataset)} pseudo masks are missing from {masks} "
                         f"(e.g. {missing[0]}): run make-pseudo first")
    threshold = cam_threshold(cfg)
    matrix = ConfusionMatrix(dataset.num_classes + 1)
    pictures = set(picture_indices(len(dataset), cfg.eval_pseudo.num_pictures))
    current = world()
    for i in shard(range(len(dataset)), current):  # under torchrun each rank scores its share
        record = dataset.records[i]
        path = masks / f"{record.id}.png"
        pseudo = load_mask(path)
        sample = dataset[i]
        gt = sample["mask"]
        if pseudo.shape != gt.shape:
            raise RpnetError(f"{path}: pseudo mask of size {pseudo.shape} but the ground truth is {gt.shape}")
        matrix.update(gt, pseudo)
        if i in pictures:
            save_picture(work.pictures(NAME) / f"{record.id}.png", cfg, record.id, sample["image"], pseudo, gt,
                         threshold)
    matrix.matrix = all_reduce_sum(matrix.matrix)
    miou = matrix.miou() * 100
    per_class = per_class_iou(matrix, dataset.class_names)
    metrics = {"pseudo_miou": round(miou, 2), "pseudo_per_class": per_class, "pseudo_images": len(dataset)}
    if current.is_main:
        update_metrics(cfg.work_dir, **metrics)
        print(format_iou_table(per_class, miou, f"pseudo masks on {split} ({len(dataset)} images)"))
    barrier()
    return metrics
