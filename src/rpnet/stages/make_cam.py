"""Stage 2: multi-scale, flipped CAMs of every training image (docs/method.md stage 2).

For each image and scale (1.0, 0.5, 1.5, 2.0 by default) the image and its mirror go
through the classifier's original branch (or, with ``model.cam_source: enhanced``, the
prototype module run on the image alone, K = 1); the CAMs of both are added, resized and
summed over scales, then only the tagged classes are kept, each divided by its max.

Writes ``WORK_DIR/make_cam/cams/<id>.npz`` with ``keys`` (K,) the tagged foreground class
indices, ``cam`` (K, ceil(H/4), ceil(W/4)) at stride 4 and ``high_res`` (K, H, W), both
float16 in [0, 1]. An image whose file exists is skipped, so a killed run continues where
it stopped; files are written atomically, so none is half-written.

Under torchrun each rank takes every R-th image of the split (:func:`rpnet.engine.distributed.shard`),
so no two ranks write the same file and the files equal a single process's. On CUDA the
model runs in channels-last layout under bfloat16 autocast (``engine.*``), images of one size
go through together with their mirror images, and loader workers pin memory.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from .common import stage_dir
from ..config import Config
from ..data.build import build_dataset
from ..data.transforms import eval_transform
from ..engine.checkpoint import load_model_weights
from ..engine.distributed import barrier, shard, world
from ..engine.progress import progress_bar
from ..errors import RpnetError
from ..io import readable
from ..layout import CamFile, WorkDir, save_cams
from ..models.build import build_classifier
from ..models.rpnet import RPNetClassifier
from ..ops.cam import max_normalize
from ..ops.random_walk import WALK_STRIDE, strided_size
from ..engine.trainer import autocast_context
from ..runtime import resolve_device, seed_everything, to_memory_format, use_channels_last

log = logging.getLogger(__name__)

NAME = "make-cam"


@torch.no_grad()
def multiscale_cams(model: RPNetClassifier, images: Tensor, scales: tuple[float, ...], flip: bool,
                    enhanced: bool = False) -> tuple[Tensor, Tensor]:
    """Summed CAMs of a batch of same-size images over scales (and mirror images).

    images (B, 3, H, W) normalised -> (B, C, ceil(H/4), ceil(W/4)) and (B, C, H, W), unnormalised.
    The full-size map is upsampled to the feature grid's multiple of the output stride and cropped
    (as IRN), so that each feature cell stays aligned with the pixels it covers.
    """
    b, _, h, w = images.shape
    os_ = model.backbone.output_stride
    small = strided_size((h, w), WALK_STRIDE)
    up = (math.ceil(h / os_) * os_, math.ceil(w / os_) * os_)
    strided = images.new_zeros((b, model.num_classes) + small)
    high = images.new_zeros((b, model.num_classes, h, w))
    for scale in scales:
        x = images if scale == 1.0 else F.interpolate(
            images, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        cams = model_cams(model, x, enhanced)
        if flip:
            cams = cams[:b] + cams[b:].flip(-1)
        strided += F.interpolate(cams, size=small, mode="bilinear", align_corners=False)
        high += F.interpolate(cams, size=up, mode="bilinear", align_corners=False)[..., :h, :w]
    return strided, high


def model_cams(model: RPNetClassifier, x: Tensor, enhanced: bool) -> Tensor:
    """relu(Theta^T f) from the original branch, or from f'_N with the image as its own group."""
    if enhanced and model.settings is not None:
        return model.cams(model(x, group_size=1).features_enhanced)
    return model.cams(model.cam_features(x))


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Write one CAM file per image of the split; return the folder."""
    work = WorkDir(cfg.work_dir)
    stage_dir(cfg, NAME)
    out = work.cams
    out.mkdir(exist_ok=True)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    split = cfg.make_cam.split or cfg.data.train_split
    dataset = build_dataset(cfg.data, split, eval_transform())
    model = build_classifier(cfg.model, dataset.num_classes, load_pretrained=False)
    weights = work.weights("train-cam")
    if not weights.is_file():
        raise RpnetError(f"no classifier weights at {weights}: run train-cam first")
    load_model_weights(weights, model)
    channels_last = use_channels_last(device, cfg.engine.channels_last)
    to_memory_format(model.to(device), channels_last).eval()
    enhanced = cfg.model.cam_source == "enhanced"

    # Shard before looking for finished files: a rank that lists them while another writes must
    # still get the same images, or some would be done twice and others never. Batches are fixed runs
    # of this rank's images, whatever is already done: floating-point results depend on what an image
    # is batched with, so a resumed run redoes every batch with a missing (or unreadable) file whole,
    # and writes the bytes an uninterrupted run writes.
    current = world()
    mine = shard(range(len(dataset)), current)
    size = cfg.make_cam.batch_size
    chunks = [mine[i:i + size] for i in range(0, len(mine), size)]
    todo_chunks = [c for c in chunks if not all(readable(work.cam(dataset.records[i].id)) for i in c)]
    todo = [i for chunk in todo_chunks for i in chunk]
    log.info("make-cam: %d of %d images to do on this rank (rank %d of %d; %d done before)",
             len(todo), len(mine), current.rank, current.size, len(mine) - len(todo))
    loader = DataLoader(Subset(dataset, todo), batch_size=None, num_workers=cfg.data.num_workers,
                        pin_memory=device.type == "cuda")
    bar = progress_bar(len(todo), "make-cam", "img", enabled=current.is_main)

    def flush(samples: list[dict]) -> None:
        images = torch.stack([s["image"] for s in samples]).to(device, non_blocking=True)
        with autocast_context(device, cfg.engine.inference_amp):
            strided, high = multiscale_cams(model, to_memory_format(images, channels_last), cfg.make_cam.scales,
                                            cfg.make_cam.flip, enhanced)
        for s, st, hi in zip(samples, strided, high):
            keys = torch.nonzero(torch.as_tensor(s["tags"])).flatten()
            save_cams(work.cam(s["id"]), CamFile(keys=keys.numpy(), cam=max_normalize(st[keys.to(device)]).cpu().numpy(),
                                                 high_res=max_normalize(hi[keys.to(device)]).cpu().numpy()))
        bar.update(len(samples))

    # Within a batch, images of one size are inferred together; VOC's sizes vary, synthetic data's do not.
    samples = iter(loader)
    for chunk in todo_chunks:
        buckets: dict[tuple[int, ...], list[dict]] = defaultdict(list)
        for _ in chunk:
            sample = next(samples)
            buckets[tuple(sample["image"].shape)].append(sample)
        for bucket in buckets.values():
            flush(bucket)
    bar.close()
    barrier()  # every rank's files are written before any rank (or the next stage) reads them
    return out
