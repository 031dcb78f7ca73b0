"""Stage 4: confident labels for boundary refinement (METHOD.md stage 4, IRN's cam_to_ir_label).

For each training image, the full-size CAMs of stage 2 are turned into two argmax maps, one
with a high background score (``ir_label.fg_threshold``: only strong CAM is foreground) and
one with a low one (``ir_label.bg_threshold``: only weak CAM is background); each is smoothed
by a dense CRF on the image, and pixels on which they disagree are "unsure"
(:func:`rpnet.ops.crf.confident_labels`).

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

from .common import stage_dir
from ..config import Config
from ..data.build import build_dataset
from ..data.dataset import TaggedImages, Transform
from ..data.images import read_image
from ..engine.progress import progress_bar
from ..errors import RpnetError
from ..io import load_npz, save_mask
from ..engine.distributed import barrier, shard, world
from ..ops.crf import confident_labels
from .make_cam import cam_dir

log = logging.getLogger(__name__)

STAGE_DIR = "make_ir_label"


def label_dir(work_dir: Path) -> Path:
    """Where the confident labels are: ``WORK_DIR/make_ir_label/labels``."""
    return Path(work_dir) / STAGE_DIR / "labels"


def ir_label_dataset(cfg: Config, transform: Transform | None = None) -> TaggedImages:
    """The images stages 4 and 5 use: ``ir_label.split`` (default: the train split) as training
    data, i.e. untagged images dropped and ``data.fraction`` applied, as for the classifier."""
    split = cfg.ir_label.split or cfg.data.train_split
    return build_dataset(cfg.data, split, transform, for_training=True, seed=cfg.seed)


def label_image(image_path: Path, cam_path: Path, out_path: Path, fg_threshold: float, bg_threshold: float) -> Path:
    """Confident labels of one image, written to ``out_path``; returns ``out_path``.

    A top-level function of paths and numbers, so that worker processes started with
    "spawn" can run it (they get no dataset object). The CAM file holds ``keys`` (K,) and
    ``high_res`` (K, H, W); the image is (H, W, 3).
    """
    image = read_image(image_path)
    cam = load_npz(cam_path)
    high = cam["high_res"].astype(np.float32)
    if high.shape[1:] != image.shape[:2]:
        raise RpnetError(f"{cam_path}: CAM size {high.shape[1:]} differs from the size {image.shape[:2]} "
                         f"of image {image_path}; rerun make-cam")
    labels = confident_labels(image, high, cam["keys"], fg_threshold, bg_threshold)
    return save_mask(out_path, labels)


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Write one confident-label PNG per image; return the folder."""
    out = label_dir(cfg.work_dir)
    stage_dir(cfg, STAGE_DIR)
    out.mkdir(exist_ok=True)
    dataset = ir_label_dataset(cfg)
    cams = cam_dir(cfg.work_dir)
    current = world()
    # Each rank takes its shard before looking for finished files, so ranks never split differently.
    todo = [r for r in shard(dataset.records, current) if not (out / f"{r.id}.png").exists()]
    for record in todo:
        if not (cams / f"{record.id}.npz").exists():
            raise RpnetError(f"no CAM for image {record.id} at {cams / f'{record.id}.npz'}: run make-cam first")
    tc = cfg.ir_label
    jobs = [(r.image, cams / f"{r.id}.npz", out / f"{r.id}.png", tc.fg_threshold, tc.bg_threshold) for r in todo]
    log.info("make-ir-label: %d of %d images to do (%d done before), %d workers",
             len(todo), len(dataset), len(dataset) - len(todo), tc.workers)
    bar = progress_bar(len(jobs), "make-ir-label", "img", enabled=current.is_main)
    try:
        if tc.workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                label_image(*job)
                bar.update(1)
        else:
            # "spawn": a forked child would inherit the parent's torch thread pools, which can
            # deadlock; spawned ones start clean (and it is the only start method on some systems).
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=tc.workers, mp_context=context) as pool:
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


main = run
