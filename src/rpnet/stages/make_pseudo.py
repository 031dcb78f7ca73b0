"""Stage 6: pseudo masks by a random walk on IRN's boundary map (docs/method.md stage 6, IRN's make_sem_seg_labels).

For each image, the trained IRNet gives a class-boundary map at stride 4 (the image and its
mirror image averaged), and the stride-4 CAMs of stage 2 are walked within the regions the
boundaries enclose (:func:`rpnet.ops.random_walk.walk_cams`). Once every image is walked, the
constant background score of the argmax (``pseudo.bg_threshold``) is calibrated without ground
truth (docs/calibration.md) for ``auto``: the lower edge of a three-class Otsu split of the
walked scores of the whole split, as eval-cam and make-ir-label calibrate the CAMs'. It is
written to ``WORK_DIR/make_pseudo/calibration.json``.

Writes ``WORK_DIR/make_pseudo/masks/<id>.png`` (VOC palette: 0 background, k + 1 class k),
``walks/<id>.npz`` (``keys`` (K,), ``walked`` (K, h, w) at stride 4, ``size`` (H, W)) and, for
eval-pseudo's pictures, ``boundaries/<id>.png`` (the boundary probabilities at stride 4 as 8-bit
grey). An image whose walk exists is not walked again, and every file is written atomically, so
a killed run continues where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from .common import stage_dir
from ..calibration import resolve, write_calibration
from ..config import AUTO, Config
from ..data.build import build_dataset
from ..data.transforms import eval_transform
from ..engine.checkpoint import load_model_weights
from ..engine.distributed import all_reduce_sum, barrier, shard, world
from ..engine.progress import progress_bar
from ..errors import RpnetError
from ..io import load_npz, readable, save_mask, save_npz
from ..layout import WorkDir, load_cams, save_boundary
from ..models.build import build_irn
from ..ops.calibration import BINS, otsu_thresholds3, score_histogram
from ..ops.random_walk import WALK_STRIDE, scores_to_labels, strided_size, walk_cams, walk_scores
from ..runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)

NAME = "make-pseudo"


def load_scores(path: Path) -> tuple[np.ndarray, torch.Tensor]:
    """A walk file -> (keys (K,), the walked scores (K, H, W) of :func:`walk_scores`)."""
    walk = load_npz(path)
    height, width = (int(v) for v in walk["size"])
    return walk["keys"], walk_scores(torch.from_numpy(walk["walked"].astype(np.float32)), (height, width))


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Walk every image of the split, calibrate, write one pseudo mask per image; return the mask folder."""
    folder = stage_dir(cfg, NAME)
    work = WorkDir(cfg.work_dir)
    out, edges, walks = work.pseudo_masks, work.boundaries, work.walks
    for path in (out, edges, walks):
        path.mkdir(exist_ok=True)
    split = cfg.pseudo.split or cfg.data.train_split
    dataset = build_dataset(cfg.data, split, eval_transform())
    current = world()
    mine = shard(range(len(dataset)), current)
    ids = [dataset.records[i].id for i in mine]
    walk_images(cfg, dataset, [i for i in mine if not readable(walks / f"{dataset.records[i].id}.npz")])
    barrier()  # the calibration needs every rank's walks

    histogram = np.zeros(BINS, dtype=np.int64)
    for image_id in ids:
        histogram += score_histogram(load_scores(walks / f"{image_id}.npz")[1].numpy())
    histogram = all_reduce_sum(histogram)
    if cfg.pseudo.bg_threshold == AUTO and np.count_nonzero(histogram) < 3:
        raise RpnetError("the walked scores are (nearly) constant: nothing to calibrate pseudo.bg_threshold from; "
                         "set it to a number")
    bg_estimate = otsu_thresholds3(histogram)[0] if np.count_nonzero(histogram) >= 3 else float(cfg.pseudo.bg_threshold)
    bg_threshold = resolve(cfg.pseudo.bg_threshold, bg_estimate)[0]
    if current.is_main:
        write_calibration(folder, {"bg_threshold": cfg.pseudo.bg_threshold}, {"bg_threshold": bg_estimate},
                          {"images": len(dataset), "walked_score_histogram": histogram.tolist()})
        log.info("make-pseudo: background score %.3f (%s)", bg_threshold,
                 "calibrated" if cfg.pseudo.bg_threshold == AUTO else "configured")

    bar = progress_bar(len(ids), "make-pseudo: masks", "img", enabled=current.is_main)
    for image_id in ids:
        path = out / f"{image_id}.png"
        if not readable(path):
            keys, scores = load_scores(walks / f"{image_id}.npz")
            save_mask(path, scores_to_labels(scores, keys, bg_threshold).numpy())
        bar.update(1)
    bar.close()
    barrier()
    return out


def walk_images(cfg: Config, dataset, todo: list[int]) -> None:
    """Walk the CAMs of images ``todo`` of ``dataset`` on IRN's boundary maps; write walks and boundaries."""
    if not todo:
        return
    work = WorkDir(cfg.work_dir)
    edges, walks = work.boundaries, work.walks
    for i in todo:
        path = work.cam(dataset.records[i].id)
        if not path.exists():
            raise RpnetError(f"no CAM for image {dataset.records[i].id} at {path}: run make-cam first")
    weights = work.weights("train-irn")
    if not weights.is_file():
        raise RpnetError(f"no IRN weights at {weights}: run train-irn first")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    net = build_irn(cfg.model)
    load_model_weights(weights, net)
    net.to(device).eval()
    pc = cfg.pseudo
    log.info("make-pseudo: %d of %d images to walk (%d done before)", len(todo), len(dataset), len(dataset) - len(todo))
    bar = progress_bar(len(todo), "make-pseudo: walk", "img", enabled=world().is_main)
    for sample in DataLoader(Subset(dataset, todo), batch_size=None, num_workers=cfg.data.num_workers,
                             pin_memory=device.type == "cuda"):
        image_id, image = sample["id"], sample["image"]
        height, width = image.shape[-2:]
        # IRN pads every image to its training crop, so that GroupNorm sees maps like those it trained on.
        edge = net.predict(image.to(device), flip=True, pad_to=cfg.train_irn.crop_size).edge[0]
        cam_path = work.cam(image_id)
        cam = load_cams(cam_path)
        expected = strided_size((height, width), WALK_STRIDE)
        if cam.cam.shape[1:] != expected or tuple(edge.shape) != expected:
            raise RpnetError(f"{cam_path}: stride-4 CAM of size {cam.cam.shape[1:]} and boundary map of size "
                             f"{tuple(edge.shape)}, but image {image_id} of size {(height, width)} needs {expected}; "
                             "rerun make-cam")
        strided = torch.from_numpy(cam.cam.astype(np.float32)).to(device)
        walked = walk_cams(strided, edge, radius=pc.radius, beta=pc.beta, steps=pc.steps)
        save_boundary(edges / f"{image_id}.png", edge.cpu().numpy())
        save_npz(walks / f"{image_id}.npz", keys=np.asarray(cam.keys, dtype=np.int64),
                 walked=walked.cpu().numpy().astype(np.float32), size=np.array([height, width], dtype=np.int64))
        bar.update(1)
    bar.close()


main = run
