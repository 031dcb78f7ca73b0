"""Stage 9: predict with the segmentation model and score it, with and without a dense CRF (docs/method.md stage 9).

Every image of ``eval_seg.split`` (default ``data.eval_split``) goes through the model at each of
``eval_seg.scales``, and its mirror image when ``eval_seg.flip``; the averaged softmax probabilities
give the prediction, and, with ``eval_seg.crf``, a dense CRF on them (DeepLab's settings,
:data:`rpnet.ops.crf.DEEPLAB_CRF`) the CRF prediction (Table VIII reports both).

Writes ``WORK_DIR/eval_seg/masks/<id>.png`` and ``masks_crf/<id>.png`` (VOC palette, the format
the VOC test server takes) and a few pictures (image, prediction, CRF prediction, ground truth)
under ``pictures/``. When the split has masks, adds ``seg_miou``, ``seg_miou_crf`` (percent),
``seg_per_class`` and ``seg_per_class_crf`` (name -> IoU percent) to ``WORK_DIR/metrics.json``;
a split without masks (VOC test) gets its masks written and no scores.

A rerun skips the images whose masks exist, as long as ``eval_seg/inference.json`` (the weights'
checksum, scales, flip and CRF switch) still matches; otherwise every image is predicted again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from .common import stage_dir
from ..config import Config
from ..data.build import build_dataset
from ..data.dataset import TaggedImages
from ..engine.progress import progress_bar
from ..errors import RpnetError
from ..engine.distributed import all_reduce_sum, barrier, shard, world
from ..io import file_sha256, load_mask, read_json, readable, save_mask, write_json
from ..metrics import ConfusionMatrix, format_iou_table, per_class_iou
from ..ops.crf import crf_refine_probs
from ..predict import Predictor
from ..layout import WorkDir, update_metrics
from ..viz import colorize, picture_indices, save_panels

log = logging.getLogger(__name__)

NAME = "eval-seg"
SETTINGS_NAME = "inference.json"
CRF_METRICS = ("seg_miou_crf", "seg_per_class_crf")  # only written, and kept, when eval_seg.crf is on

# image (H, W, 3) uint8 -> class probabilities (C, H, W)
ProbabilityFn = Callable[[np.ndarray], np.ndarray]


def predict_labels(probabilities: ProbabilityFn, image: np.ndarray, crf: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """image (H, W, 3) uint8 -> the (H, W) uint8 prediction and, with ``crf``, the CRF-refined one (else None)."""
    probs = probabilities(image)
    pred = probs.argmax(axis=0).astype(np.uint8)
    if not crf:
        return pred, None
    return pred, crf_refine_probs(image, probs).argmax(axis=0).astype(np.uint8)


def save_picture(path: Path, image: np.ndarray, pred: np.ndarray, pred_crf: np.ndarray | None,
                 gt: np.ndarray | None) -> Path:
    """One row of panels: image, prediction, CRF prediction, ground truth (the last two when present)."""
    panels = [("image", image, None), ("prediction", colorize(pred), None)]
    if pred_crf is not None:
        panels.append(("prediction + CRF", colorize(pred_crf), None))
    if gt is not None:
        panels.append(("ground truth", colorize(gt), None))
    return save_panels(path, panels)


def evaluate(probabilities: ProbabilityFn, dataset: TaggedImages, work_dir: Path, *, crf: bool = True,
             num_pictures: int = 8, reuse: bool = False) -> dict:
    """Predict every image of ``dataset`` (samples without transform), write the masks and pictures,
    and score against the dataset's masks when it has them.

    With ``reuse``, an image whose masks are already written is read back instead of predicted.
    Returns the metrics (empty when the dataset has no masks); does not write metrics.json.
    Under torchrun each rank predicts its share of the images and the confusion matrices are summed.
    """
    work = WorkDir(work_dir)
    masks, crf_masks, pictures_dir = work.seg_masks, work.seg_masks_crf, work.pictures(NAME)
    num_labels = len(dataset.class_names)
    matrix, matrix_crf = ConfusionMatrix(num_labels), ConfusionMatrix(num_labels)
    pictures = set(picture_indices(len(dataset), num_pictures))
    current = world()
    mine = shard(range(len(dataset)), current)
    bar = progress_bar(len(mine), "eval-seg", "img", enabled=current.is_main)
    for i in mine:
        record = dataset.records[i]
        sample = dataset[i]
        image, gt = sample["image"], sample.get("mask")
        paths = [masks / f"{record.id}.png"] + ([crf_masks / f"{record.id}.png"] if crf else [])
        if reuse and all(readable(p) for p in paths):
            pred, pred_crf = load_mask(paths[0]), (load_mask(paths[1]) if crf else None)
        else:
            pred, pred_crf = predict_labels(probabilities, image, crf)
            if pred_crf is not None:
                save_mask(paths[1], pred_crf)
            save_mask(paths[0], pred)  # last: its presence marks the image done
        if pred.shape != image.shape[:2]:
            raise RpnetError(f"{paths[0]}: mask of size {pred.shape} for image {record.id} of size "
                             f"{image.shape[:2]}; delete {masks.parent} and rerun eval-seg")
        if gt is not None:
            matrix.update(gt, pred)
            if pred_crf is not None:
                matrix_crf.update(gt, pred_crf)
        if i in pictures:
            save_picture(pictures_dir / f"{record.id}.png", image, pred, pred_crf, gt)
        bar.update(1)
    bar.close()
    if not dataset.has_masks:
        return {}
    matrix.matrix, matrix_crf.matrix = all_reduce_sum(np.stack([matrix.matrix, matrix_crf.matrix]))
    metrics = {"seg_miou": round(matrix.miou() * 100, 2), "seg_per_class": per_class_iou(matrix, dataset.class_names),
               "seg_never_predicted": [dataset.class_names[i] for i in matrix.never_predicted()]}
    if crf:
        metrics.update(zip(CRF_METRICS, (round(matrix_crf.miou() * 100, 2),
                                         per_class_iou(matrix_crf, dataset.class_names))))
    return metrics


def run(cfg: Config, *, resume: bool = False) -> dict:
    """Predict and score ``eval_seg.split``; return the metrics added to metrics.json."""
    out_dir = stage_dir(cfg, NAME)
    work = WorkDir(cfg.work_dir)
    ec = cfg.eval_seg
    split = ec.split or cfg.data.eval_split
    weights = work.weights("train-seg")
    if not weights.is_file():
        raise RpnetError(f"no segmentation weights at {weights}: run train-seg first")
    dataset = build_dataset(cfg.data, split, masks=True)
    # Whole images at every scale, as the published numbers are measured (no tiling).
    predictor = Predictor.from_weights(weights, device=cfg.device, scales=ec.scales, flip=ec.flip, tile_size=None)
    if len(predictor.class_names) != len(dataset.class_names):
        raise RpnetError(f"{weights}: the model has {len(predictor.class_names)} classes but split {split!r} of "
                         f"{cfg.data.root} has {len(dataset.class_names)}; retrain with train-seg")
    settings = {"weights_sha256": file_sha256(weights), "scales": list(ec.scales), "flip": ec.flip, "crf": ec.crf}
    settings_path = out_dir / SETTINGS_NAME
    reuse = settings_path.is_file() and read_json(settings_path) == settings
    barrier()  # every rank has compared the old settings before rank 0 replaces them
    if world().is_main:
        write_json(settings_path, settings)
    log.info("eval-seg: %d images of %r, scales %s, flip %s, CRF %s%s", len(dataset), split, list(ec.scales),
             ec.flip, ec.crf, " (reusing finished masks)" if reuse else "")
    metrics = evaluate(predictor.probabilities, dataset, cfg.work_dir, crf=ec.crf, num_pictures=ec.num_pictures,
                       reuse=reuse)
    if world().is_main:  # the metrics are every rank's (all-reduced); one rank writes them
        if metrics:
            update_metrics(cfg.work_dir, drop=CRF_METRICS, **metrics)
            print(format_iou_table(metrics["seg_per_class"], metrics["seg_miou"],
                                   f"segmentation on {split} ({len(dataset)} images)"))
            if ec.crf:
                print(f"with dense CRF: mIoU {metrics['seg_miou_crf']:.1f}")
        else:
            log.info("eval-seg: split %r has no masks: masks written to %s, nothing scored", split,
                     work.seg_masks)
    barrier()
    return metrics
