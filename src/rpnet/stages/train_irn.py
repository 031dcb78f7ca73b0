"""Stage 5: train the inter-pixel relation network (docs/method.md stage 5, IRN's train_irn).

IRNet's two branches learn on a frozen backbone (or, with ``train_irn.train_backbone``, a trained
one) from stage 4's confident labels: pairs of
pixels less than ``train_irn.path_radius`` apart (at stride 4) with the same label should have
no class boundary between them and pairs with different labels should; same-class pairs also
supervise the displacement field (:func:`rpnet.losses.irn_loss`). Unsure pixels (255) and
crop padding take part in no pair.

The backbone (``train_irn.backbone_init``): ``pretrained`` loads ``model.pretrained`` (ImageNet),
``classifier`` takes the backbone of stage 1's ``WORK_DIR/train_cam/model.safetensors``,
``scratch`` starts from random weights (with ``train_backbone``), and ``auto`` picks ImageNet
when ``model.pretrained`` is set, else the classifier.

Writes ``WORK_DIR/train_irn/``: ``model.safetensors`` (final weights, with the displacement
mean set), ``last.pt`` (resumable checkpoint), ``log.jsonl`` and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from .common import check_batch, ir_label_dataset, stage_dir, training_images
from ..config import Config
from ..data.dataset import TaggedImages
from ..data.transforms import collate, eval_transform, seg_train_transform
from ..engine.checkpoint import save_model_weights
from ..engine.distributed import (all_reduce_sum, barrier, epoch_batches, rank_seed, shard, split_batch, world,
                                  wrap_model)
from ..engine.progress import progress_bar
from ..engine.schedule import sgd_param_groups
from ..engine.trainer import LoopSettings, train
from ..errors import ConfigError, RpnetError
from ..losses import irn_loss
from ..layout import WorkDir
from ..models.build import build_irn, load_classifier_backbone
from ..models.irn import IRNet
from ..models.published import pretrained_file
from ..models.weights import load_backbone_weights
from ..ops.affinity import affinity_labels, downsample_labels, path_index
from ..ops.random_walk import WALK_STRIDE
from ..runtime import resolve_device, seed_everything, to_memory_format, use_channels_last

log = logging.getLogger(__name__)

NAME = "train-irn"
DISPLACEMENT_LR_MULT = 10.0  # IRN trains the displacement branch at 10x the boundary branch's lr


def init_backbone(net: IRNet, cfg: Config) -> str:
    """Load the backbone weights ``train_irn.backbone_init`` asks for; return where they came from."""
    init = cfg.train_irn.backbone_init
    if init == "auto":
        init = "pretrained" if cfg.model.pretrained is not None else "classifier"
    if init == "scratch":
        if not cfg.train_irn.train_backbone:
            log.warning("train-irn: backbone_init 'scratch' with train_backbone false: the branches read "
                        "the features of a frozen random backbone")
        return "random initialisation"
    if init == "pretrained":
        if cfg.model.pretrained is None:
            raise ConfigError("train_irn.backbone_init is 'pretrained' but model.pretrained is null; "
                              "set model.pretrained or use backbone_init 'classifier' or 'auto'")
        source = pretrained_file(cfg.model.pretrained, cfg.model.backbone)
        load_backbone_weights(net.backbone, source)
        return f"ImageNet weights {source}"
    source = load_classifier_backbone(
        net.backbone, WorkDir(cfg.work_dir).weights("train-cam"),
        missing_hint="to start IRN's backbone from: run train-cam first (or set model.pretrained)",
        mismatch_hint=f"does not fit a {cfg.model.backbone} at output stride {cfg.model.output_stride} "
                      "(set model.* as in stage 1)")
    return f"the classifier {source}"


def labelled_dataset(cfg: Config) -> TaggedImages:
    """The training images with their confident labels as masks, augmented with
    ``seg_train_transform`` (scale jitter, flip, crop padded with 255)."""
    images = ir_label_dataset(cfg)
    labels = WorkDir(cfg.work_dir).ir_labels
    records = [dataclasses.replace(r, mask=labels / f"{r.id}.png") for r in images.records]
    missing = [r.mask for r in records if not r.mask.is_file()]
    if missing:
        raise RpnetError(f"{len(missing)} confident labels are missing (e.g. {missing[0]}): run make-ir-label first")
    tc = cfg.train_irn
    return TaggedImages(records, images.class_names, transform=seg_train_transform(tc.crop_size, tc.scale_range),
                        seed=cfg.seed)


@torch.no_grad()
def displacement_mean(net: IRNet, images: TaggedImages, crop_size: int, batch_size: int,
                      device: torch.device, num_workers: int = 0) -> torch.Tensor:
    """IRN's MeanShift statistic: the mean (dy, dx) of the field over ``images`` -> (2,).

    ``images`` gives normalised (3, H, W) tensors (``eval_transform``). As IRN, the net runs in
    eval mode with the mean still zero, on each image's top-left ``crop_size`` crop, zero-padded
    (the ImageNet mean after normalisation) where the image is smaller. Stage 6's semantic
    pseudo labels use the boundary map only; the mean is kept for instance masks and exports.
    Under torchrun each rank takes its shard of the images and the sums are added over ranks.
    """
    net.displacement_mean.zero_()
    net.eval()
    total, count = torch.zeros(2, device=device), 0
    batch: list[torch.Tensor] = []
    current = world()
    mine = Subset(images, shard(range(len(images)), current))
    bar = progress_bar(len(mine), "displacement mean", "img", enabled=current.is_main)
    for i, sample in enumerate(DataLoader(mine, batch_size=None, num_workers=num_workers,
                                          pin_memory=device.type == "cuda")):
        image = sample["image"][:, :crop_size, :crop_size]
        crop = image.new_zeros((3, crop_size, crop_size))
        crop[:, :image.shape[1], :image.shape[2]] = image
        batch.append(crop)
        if len(batch) == batch_size or i == len(mine) - 1:
            field = net(torch.stack(batch).to(device)).displacement
            total += field.mean(dim=(2, 3)).sum(dim=0)
            count += len(batch)
            bar.update(len(batch))
            batch = []
    bar.close()
    sums = all_reduce_sum(torch.cat([total.cpu().double(), torch.tensor([count], dtype=torch.float64)]))
    return (sums[:2] / max(float(sums[2]), 1.0)).float()


def check(cfg: Config) -> None:
    """What can be checked before any stage runs: the batch fits the training images."""
    check_batch("train_irn.batch_size", cfg.train_irn.batch_size, len(training_images(cfg, None)))


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Train IRNet and return the path of the final weights.

    Under torchrun ``train_irn.batch_size`` is the global batch: each rank takes its slice of
    every step's batch (:func:`rpnet.engine.distributed.epoch_batches`) and DDP averages the gradients.
    """
    out_dir = stage_dir(cfg, NAME)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    tc = cfg.train_irn
    current = world()
    per_rank = split_batch(tc.batch_size, current.size, key="train_irn.batch_size")
    dataset = labelled_dataset(cfg)
    check_batch("train_irn.batch_size", tc.batch_size, len(dataset))
    steps_per_epoch = len(dataset) // tc.batch_size
    net = build_irn(cfg.model, train_backbone=tc.train_backbone, boundary_prior=tc.boundary_prior)
    source = init_backbone(net, cfg)
    channels_last = use_channels_last(device, cfg.engine.channels_last)
    to_memory_format(net.to(device), channels_last)
    groups = net.parameter_groups()
    optimizer = torch.optim.SGD(
        sgd_param_groups(groups.backbone + groups.boundary, groups.displacement, tc.lr, tc.weight_decay,
                         DISPLACEMENT_LR_MULT),
        lr=tc.lr, momentum=tc.momentum,
    )
    # Every trainable parameter (the two branches, and the backbone past its stem when trained) gets a gradient.
    model = wrap_model(net, device, sync_bn=cfg.engine.sync_bn, find_unused_parameters=False)
    if current.rank:
        torch.manual_seed(rank_seed(cfg.seed, current.rank))  # rank 0 keeps the single-process stream
    index = path_index(tc.path_radius)
    log.info("train-irn: %d images, %s backbone from %s, %d epochs x %d steps, batch %d = %d rank(s) x %d, "
             "crop %d, radius %d%s", len(dataset), cfg.model.backbone, source, tc.epochs, steps_per_epoch,
             tc.batch_size, current.size, per_rank, tc.crop_size, tc.path_radius,
             ", backbone trained too" if tc.train_backbone else ", backbone frozen")

    def batches(epoch: int, skip: int):
        dataset.set_epoch(epoch)
        plan = epoch_batches(len(dataset), tc.batch_size, cfg.seed, epoch, current.size, current.rank,
                             key="train_irn.batch_size")[skip:]
        return DataLoader(dataset, batch_sampler=plan, collate_fn=collate, num_workers=cfg.data.num_workers,
                          pin_memory=device.type == "cuda")

    def step(batch):
        images = to_memory_format(batch["image"].to(device, non_blocking=True), channels_last)
        labels = affinity_labels(downsample_labels(batch["mask"].to(device, non_blocking=True), WALK_STRIDE), index)
        out = model(images)
        # The losses in float32: 1 + 1e-5 - affinity rounds to 0 in bfloat16, and its log to -inf.
        loss = irn_loss(out.edge.float(), out.displacement.float(), labels, index, tc.fg_pos_weight)
        return {"loss": loss.total, "bg_pos": loss.affinity.bg_pos, "fg_pos": loss.affinity.fg_pos,
                "neg": loss.affinity.neg, "disp_fg": loss.displacement.fg, "disp_bg": loss.displacement.bg}

    settings = LoopSettings(epochs=tc.epochs, steps_per_epoch=steps_per_epoch, poly_power=tc.poly_power,
                            amp=tc.amp, log_every=tc.log_every, max_steps=tc.max_steps, global_batch=tc.batch_size,
                            trace=cfg.engine.trace_ranks, tensorboard=cfg.engine.tensorboard)
    weights = train(model, optimizer, batches, step, settings, out_dir, device=device, resume=resume)
    mean = displacement_mean(net, ir_label_dataset(cfg, eval_transform()), tc.crop_size, per_rank,
                             device, cfg.data.num_workers)
    net.displacement_mean.copy_(mean)
    if current.is_main:
        save_model_weights(weights, net)
    barrier()  # the final weights, with the mean, exist before any rank reads them
    log.info("train-irn: displacement mean (%.3f, %.3f); weights written to %s", *mean.tolist(), weights)
    return weights
