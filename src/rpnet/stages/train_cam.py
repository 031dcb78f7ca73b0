"""Stage 1: train the classifier (RPNet, or the plain-CAM baseline with ``model.prototypes: false``).

Writes ``WORK_DIR/train_cam/``: ``model.safetensors`` (final weights), ``last.pt`` (resumable
checkpoint, every epoch and on Ctrl-C), ``log.jsonl`` (loss terms, lr, images/s) and
``config.yaml`` (the resolved config).

Both models see the same stream of images: batches of groups of K images sharing a class
(docs/method.md stage 1), each tagged image an anchor once per epoch. The baseline ignores the
grouping, so a baseline and an RPNet run with the same seed differ only in the prototype module.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .common import check_batch, stage_dir, training_images
from ..config import CAM_SCHEDULES, Config, cam_schedule_name
from ..data.build import build_dataset
from ..data.sampling import GroupBatchSampler
from ..data.transforms import collate, train_transform
from ..engine.checkpoint import unwrap
from ..engine.distributed import rank_seed, split_batch, world, wrap_model
from ..engine.schedule import sgd_param_groups
from ..engine.trainer import LoopSettings, train
from ..errors import ConfigError
from ..losses import classifier_loss
from ..models.build import build_classifier
from ..models.published import IMAGENET, pretrained_file
from ..runtime import resolve_device, seed_everything, to_memory_format, use_channels_last

log = logging.getLogger(__name__)

NAME = "train-cam"


def check(cfg: Config) -> None:
    """What can be checked before any stage runs: the ImageNet weights are there, the batch fits the
    training images."""
    weights = pretrained_file(cfg.model.pretrained, cfg.model.backbone)  # imagenet: downloaded once, here
    if weights is not None and not weights.is_file():
        raise ConfigError(f"model.pretrained {cfg.model.pretrained} not found: give the path of ImageNet weights, "
                          f"'{IMAGENET}' to download the backbone's published file (README \"ImageNet weights\"), or "
                          "null to train the backbone from scratch")
    check_batch("train_cam.batch_size", cfg.train_cam.batch_size, len(training_images(cfg)),
                cfg.train_cam.batch_size // cfg.model.group_size)


def schedule_text(model) -> str:
    """``lr 0.01, momentum 0.9, epochs 15``: the schedule of :data:`~rpnet.config.CAM_SCHEDULES` for ``model``."""
    return ", ".join(f"{key} {value:g}" for key, value in CAM_SCHEDULES[cam_schedule_name(model)].items())


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Train and return the path of the final weights.

    Under torchrun ``train_cam.batch_size`` is the global batch: each of the R ranks takes
    batch_size / R images, whole groups of K, its groups disjoint from the other ranks'
    (:class:`GroupBatchSampler` shards the epoch's groups); DDP averages the gradients.
    """
    out_dir = stage_dir(cfg, NAME)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    tc = cfg.train_cam
    current = world()
    per_rank = split_batch(tc.batch_size, current.size, cfg.model.group_size, "train_cam.batch_size")
    dataset = build_dataset(cfg.data, cfg.data.train_split, train_transform(tc.crop_size, tc.resize_long),
                            for_training=True, seed=cfg.seed)
    check_batch("train_cam.batch_size", tc.batch_size, len(dataset), tc.batch_size // cfg.model.group_size)
    sampler = GroupBatchSampler(dataset.tag_matrix(), cfg.model.group_size, per_rank, cfg.seed,
                                num_replicas=current.size, rank=current.rank)
    channels_last = use_channels_last(device, cfg.engine.channels_last)
    net = to_memory_format(build_classifier(cfg.model, dataset.num_classes).to(device), channels_last)
    backbone_params, new_params = net.parameter_groups()
    optimizer = torch.optim.SGD(
        sgd_param_groups(backbone_params, new_params, tc.lr, tc.weight_decay, tc.new_layer_lr_mult),
        lr=tc.lr, momentum=tc.momentum,
    )
    # find_unused_parameters: block1-2 get no gradient behind IRN's detach, and a prototype level
    # whose masks are all empty on one rank gives its embedding none in that step.
    model = wrap_model(net, device, sync_bn=cfg.engine.sync_bn, find_unused_parameters=True)
    if current.rank:
        torch.manual_seed(rank_seed(cfg.seed, current.rank))  # rank 0 keeps the single-process stream
    log.info("train-cam: %d images, %s, prototypes %s, %d epochs x %d steps, batch %d (groups of %d) "
             "= %d rank(s) x %d", len(dataset), cfg.model.backbone, "on" if cfg.model.prototypes else "off (baseline)",
             tc.epochs, len(sampler), tc.batch_size, cfg.model.group_size, current.size, per_rank)
    log.info("train-cam: lr %g, momentum %g, %d epochs (the %s schedule's values for the keys left null: %s)",
             tc.lr, tc.momentum, tc.epochs, "pretrained backbone" if cfg.model.pretrained is not None else
             "from-scratch (model.pretrained null)", schedule_text(cfg.model))

    def batches(epoch: int, skip: int):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        plan = list(sampler)[skip:]
        return DataLoader(dataset, batch_sampler=plan, collate_fn=collate, num_workers=cfg.data.num_workers,
                          pin_memory=device.type == "cuda")

    classifier_weight = lambda: unwrap(model).classifier.weight  # noqa: E731

    def step(batch):
        images = to_memory_format(batch["image"].to(device, non_blocking=True), channels_last)
        tags = batch["tags"].to(device, non_blocking=True)
        out = model(images)
        loss = classifier_loss(
            out, tags, classifier_weight(), lambda_s=cfg.model.lambda_s, ls_mode=cfg.model.ls_mode,
            ls_detach_enhanced=cfg.model.ls_detach_enhanced, lc_on_original=cfg.model.resolve("lc_on_original"),
            lc_on_enhanced=cfg.model.resolve("lc_on_enhanced"),
        )
        return {"loss": loss.total, "l_c": loss.cls, "l_s": loss.consistency}

    settings = LoopSettings(epochs=tc.epochs, steps_per_epoch=len(sampler), poly_power=tc.poly_power,
                            amp=tc.amp, log_every=tc.log_every, max_steps=tc.max_steps, global_batch=tc.batch_size,
                            trace=cfg.engine.trace_ranks, tensorboard=cfg.engine.tensorboard)
    weights = train(model, optimizer, batches, step, settings, out_dir, device=device, resume=resume)
    log.info("train-cam: weights written to %s", weights)
    return weights
