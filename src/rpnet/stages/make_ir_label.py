"""Stage 4: confident labels for boundary refinement (docs/method.md stage 4, IRN's cam_to_ir_label).

For each training image, the full-size CAMs of stage 2 are turned into two argmax maps, one
with a high background score (``ir_label.fg_threshold``: only strong CAM is foreground) and
one with a low one (``ir_label.bg_threshold``: only weak CAM is background); each is smoothed
by a dense CRF on the image, and pixels on which they disagree are "unsure"
(:func:`rpnet.ops.crf.confident_labels`).

With ``auto`` (the default) the two thresholds come from the CAMs themselves, without ground
truth (docs/calibration.md): the CAM threshold t of :func:`rpnet.calibration.lower_edge_estimate` (as eval-cam
calibrates it: the lower edge of a three-class Otsu split of the CAM values) is the foreground threshold and
t / 2 the background one, a narrow unsure band just below the CAMs' own operating point. With a
calibration split (``data.calibration_split``) t is the CAM threshold that scores best on its masks. Both,
and the histogram, are written to ``WORK_DIR/make_ir_label/calibration.json``.

Writes ``WORK_DIR/make_ir_label/labels/<id>.png``: palette PNGs with 0 background, k + 1 for
class k and 255 unsure. The images are those train-irn trains on (the split's tagged images,
``data.fraction`` applied). The dense CRF runs on the CPU, so images are spread over
``ir_label.workers`` processes; an image whose PNG exists is skipped, and PNGs are written
atomically, so a killed run continues where it stopped.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from .common import ir_label_dataset, stage_dir
from ..calibration import (MaskCalibration, calibration_images, cam_histogram, lower_edge_estimate,
                           cam_threshold_on_masks, resolve_values, write_calibration)
from ..config import AUTO, Config
from ..data.images import read_image
from ..engine.progress import progress_bar
from ..errors import ConfigError, RpnetError, OutputError
from ..io import readable, save_mask
from ..layout import WorkDir, load_cams
from ..engine.distributed import all_reduce_sum, barrier, shard, world
from ..runtime import die_with_parent
from ..ops.crf import confident_labels

log = logging.getLogger(__name__)

NAME = "make-ir-label"


def label_image(image_path: Path, cam_path: Path, out_path: Path, fg_threshold: float, bg_threshold: float) -> Path:
    """Confident labels of one image, written to ``out_path``; returns ``out_path``.

    A top-level function of paths and numbers, so that worker processes started with
    "spawn" can run it (they get no dataset object). The CAM file holds ``keys`` (K,) and
    ``high_res`` (K, H, W); the image is (H, W, 3).
    """
    image = read_image(image_path)
    cam = load_cams(cam_path)
    high = cam.high_res.astype(np.float32)
    if high.shape[1:] != image.shape[:2]:
        raise RpnetError(f"{cam_path}: CAM size {high.shape[1:]} differs from the size {image.shape[:2]} "
                         f"of image {image_path}; rerun make-cam")
    labels = confident_labels(image, high, cam.keys, fg_threshold, bg_threshold)
    return save_mask(out_path, labels)


def calibrate(cfg: Config, cam_paths: list[Path]) -> tuple[float, float]:
    """(fg_threshold, bg_threshold) for this run: ``ir_label``'s numbers, or for ``auto`` the CAM
    threshold t and t / 2, where t is chosen on the calibration split's masks when there is one
    (:func:`rpnet.calibration.cam_threshold_on_masks`, as eval-cam chooses it) and estimated from the
    CAMs otherwise; written to calibration.json."""
    settings = cfg.ir_label
    configured = {"fg_threshold": settings.fg_threshold, "bg_threshold": settings.bg_threshold}
    histogram = all_reduce_sum(cam_histogram(cam_paths))
    masks = None
    images = calibration_images(cfg) if AUTO in configured.values() else None
    if images is not None:
        # The band is not scored: its width would need IRN trained per candidate. t is the CAM's best
        # threshold on the masks, and the unsure band keeps the label-free rule's shape below it.
        choice = cam_threshold_on_masks(cfg, images, AUTO)
        masks = MaskCalibration(cfg.data.calibration_split, tuple(images.ids),
                                {"fg_threshold": choice.chosen, "bg_threshold": choice.chosen / 2},
                                {"cam_threshold": choice})
    t = lower_edge_estimate(histogram, "ir_label.fg_threshold / bg_threshold",
                            needed=AUTO in configured.values() and masks is None)
    estimates = {"fg_threshold": t, "bg_threshold": None if t is None else t / 2}
    values, _ = resolve_values(configured, estimates, masks)
    if values["fg_threshold"] < values["bg_threshold"]:
        raise ConfigError(f"ir_label.fg_threshold {values['fg_threshold']} is below bg_threshold "
                          f"{values['bg_threshold']} (one set by hand, the other calibrated): set both")
    if world().is_main:
        write_calibration(WorkDir(cfg.work_dir).stage(NAME), configured, estimates,
                          {"cam_value_histogram": histogram.tolist()}, masks)
    return values["fg_threshold"], values["bg_threshold"]


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Write one confident-label PNG per image; return the folder."""
    work = WorkDir(cfg.work_dir)
    out = work.ir_labels
    stage_dir(cfg, NAME)
    out.mkdir(exist_ok=True)
    dataset = ir_label_dataset(cfg)
    current = world()
    # Each rank takes its shard before looking for finished files, so ranks never split differently.
    todo = [r for r in shard(dataset.records, current) if not readable(out / f"{r.id}.png")]
    for record in todo:
        if not work.cam(record.id).exists():
            raise OutputError(f"no CAM for image {record.id} at {work.cam(record.id)}: run make-cam first",
                              work.cam(record.id))
    settings = cfg.ir_label
    fg_threshold, bg_threshold = calibrate(cfg, [work.cam(r.id) for r in shard(dataset.records, current)])
    jobs = [(r.image, work.cam(r.id), out / f"{r.id}.png", fg_threshold, bg_threshold) for r in todo]
    log.info("make-ir-label: %d of %d images to do (%d done before), %d workers",
             len(todo), len(dataset), len(dataset) - len(todo), settings.workers)
    bar = progress_bar(len(jobs), "make-ir-label", "img", enabled=current.is_main)
    try:
        if settings.workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                label_image(*job)
                bar.update(1)
        else:
            # "spawn": a forked child would inherit the parent's torch thread pools, which can
            # deadlock; spawned ones start clean (and it is the only start method on some systems).
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=settings.workers, mp_context=context,
                                     initializer=die_with_parent) as pool:
                futures = [pool.submit(label_image, *job) for job in jobs]
                try:
                    for future in as_completed(futures):
                        future.result()
                        bar.update(1)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
    barrier()
    return out
