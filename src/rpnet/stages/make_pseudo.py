"""Stage 6: pseudo masks by a random walk on IRN's boundary map (METHOD.md stage 6, IRN's make_sem_seg_labels).

For each image, the trained IRNet gives a class-boundary map at stride 4 (the image and its
mirror image averaged); the stride-4 CAMs of stage 2 are walked within the regions the
boundaries enclose, upsampled, and the argmax against a constant background score
(``pseudo.bg_threshold``) is the pseudo mask (:func:`rpnet.ops.random_walk.pseudo_label_from_walk`).

Writes ``WORK_DIR/make_pseudo/masks/<id>.png`` (VOC palette: 0 background, k + 1 class k) and,
for eval-pseudo's pictures, ``WORK_DIR/make_pseudo/boundaries/<id>.png`` (the boundary
probabilities at stride 4 as 8-bit grey). An image whose mask exists is skipped; each boundary
map is written before its mask, and both atomically, so a killed run continues where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from .common import stage_dir
from ..config import Config
from ..data.build import build_dataset
from ..data.transforms import eval_transform
from ..engine.checkpoint import load_model_weights
from ..engine.distributed import barrier, shard, world
from ..engine.progress import progress_bar
from ..engine.trainer import WEIGHTS_NAME
from ..errors import RpnetError
from ..io import load_npz, save_image, save_mask
from ..models.irn import IRN_STRIDE
from ..ops.random_walk import pseudo_label_from_walk
from ..runtime import resolve_device, seed_everything
from .make_cam import cam_dir, strided_size
from .train_irn import STAGE_DIR as TRAIN_IRN_DIR, build_irn

log = logging.getLogger(__name__)

STAGE_DIR = "make_pseudo"
GREY_LEVELS = 255  # boundary probabilities in [0, 1] are stored as 0..255


def mask_dir(work_dir: Path) -> Path:
    """Where the pseudo masks are: ``WORK_DIR/make_pseudo/masks``."""
    return Path(work_dir) / STAGE_DIR / "masks"


def boundary_dir(work_dir: Path) -> Path:
    """Where the boundary maps are: ``WORK_DIR/make_pseudo/boundaries``."""
    return Path(work_dir) / STAGE_DIR / "boundaries"


def save_boundary(path: Path, edge: np.ndarray) -> Path:
    """A boundary map (h, w) of probabilities in [0, 1] as an 8-bit grey PNG, written atomically."""
    grey = np.rint(np.clip(edge, 0.0, 1.0) * GREY_LEVELS).astype(np.uint8)
    return save_image(path, grey)


def load_boundary(path: Path) -> np.ndarray:
    """A boundary map written by :func:`save_boundary` -> (h, w) float32 in [0, 1]."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float32) / GREY_LEVELS


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Write one pseudo mask (and boundary map) per image of the split; return the mask folder."""
    out, edges = mask_dir(cfg.work_dir), boundary_dir(cfg.work_dir)
    stage_dir(cfg, STAGE_DIR)
    out.mkdir(exist_ok=True)
    edges.mkdir(exist_ok=True)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    split = cfg.pseudo.split or cfg.data.train_split
    dataset = build_dataset(cfg.data, split, eval_transform())
    cams = cam_dir(cfg.work_dir)
    current = world()
    todo = [i for i in shard(range(len(dataset)), current) if not (out / f"{dataset.records[i].id}.png").exists()]
    for i in todo:
        path = cams / f"{dataset.records[i].id}.npz"
        if not path.exists():
            raise RpnetError(f"no CAM for image {dataset.records[i].id} at {path}: run make-cam first")
    weights = Path(cfg.work_dir) / TRAIN_IRN_DIR / WEIGHTS_NAME
    if not weights.is_file():
        raise RpnetError(f"no IRN weights at {weights}: run train-irn first")
    net = build_irn(cfg.model)
    load_model_weights(weights, net)
    net.to(device).eval()
    pc = cfg.pseudo
    log.info("make-pseudo: %d of %d images to do (%d done before)", len(todo), len(dataset), len(dataset) - len(todo))
    bar = progress_bar(len(todo), "make-pseudo", "img", enabled=current.is_main)
    for sample in DataLoader(Subset(dataset, todo), batch_size=None, num_workers=cfg.data.num_workers,
                             pin_memory=device.type == "cuda"):
        image_id, image = sample["id"], sample["image"]
        height, width = image.shape[-2:]
        # IRN pads every image to its training crop, so that GroupNorm sees maps like those it trained on.
        edge = net.predict(image.to(device), flip=True, pad_to=cfg.train_irn.crop_size).edge[0]
        cam_path = cams / f"{image_id}.npz"
        cam = load_npz(cam_path)
        expected = strided_size((height, width), IRN_STRIDE)
        if cam["cam"].shape[1:] != expected or tuple(edge.shape) != expected:
            raise RpnetError(f"{cam_path}: stride-4 CAM of size {cam['cam'].shape[1:]} and boundary map of size "
                             f"{tuple(edge.shape)}, but image {image_id} of size {(height, width)} needs {expected}; "
                             "rerun make-cam")
        strided = torch.from_numpy(cam["cam"].astype(np.float32)).to(device)
        pseudo = pseudo_label_from_walk(strided, cam["keys"], edge, (height, width), radius=pc.radius,
                                        beta=pc.beta, steps=pc.steps, bg_threshold=pc.bg_threshold)
        save_boundary(edges / f"{image_id}.png", edge.cpu().numpy())
        save_mask(out / f"{image_id}.png", pseudo.cpu().numpy())
        bar.update(1)
    bar.close()
    barrier()
    return out


main = run
