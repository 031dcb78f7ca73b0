"""Stage 8: train the segmentation model on the pseudo masks (docs/method.md stage 8).

DeepLab-LargeFOV (or DeepLab-v3+, ``train_seg.architecture``) on a dilated ResNet learns from
stage 6's pseudo masks (``train_seg.labels: pseudo``, ``WORK_DIR/make_pseudo/masks``) or, for the
upper bound of the method, from the dataset's ground-truth masks (``labels: gt``). Pixel-wise
cross-entropy ignores label 255 (VOC's borders, crop padding); augmentation is scale jitter,
flips and random crops (:func:`rpnet.data.transforms.seg_train_transform`); the learning rate
decays polynomially, with the new head at ``head_lr_mult`` times the backbone's rate.

The backbone (``train_seg.backbone_init``): ``pretrained`` loads ``model.pretrained`` (ImageNet),
``classifier`` takes the backbone of stage 1's ``WORK_DIR/train_cam/model.safetensors`` (same
backbone name required; the output stride may differ, it changes no weight), ``scratch`` starts
from a random initialisation, and ``auto`` picks ImageNet when ``model.pretrained`` is set, else
the classifier when its weights exist, else scratch.

Writes ``WORK_DIR/train_seg/``: ``model.safetensors`` (the weights, with the metadata ``rpnet predict``
needs, see :mod:`rpnet.predict`), ``last.safetensors`` (the last epoch's), ``last.pt`` (resumable
checkpoint), ``log.jsonl`` and ``config.yaml``; where ``data.eval_split`` has masks, ``val_miou`` every
``train_seg.val_every`` epochs in the log, ``best.safetensors`` (the best epoch's weights) and, in
metrics.json, the validation curve's peak and end (:func:`curve_metrics`). ``model.safetensors`` is the
best epoch's with ``train_seg.keep: best`` and validation, else the last epoch's.
The images of a calibration split (``data.calibration_split``) train on their own masks
(``train_seg.calibration_masks``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .common import check_batch, scored_dataset, stage_dir, training_images
from ..calibration import calibration_images
from ..config import Config
from ..data.build import build_dataset
from ..data.dataset import MasksOf, TaggedImages
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, collate, seg_train_transform
from ..engine.checkpoint import Progress
from ..engine.distributed import (all_reduce_sum, barrier, epoch_batches, rank_seed, shard, split_batch, world,
                                  wrap_model)
from ..engine.schedule import sgd_param_groups
from ..engine.trainer import LoopSettings, train
from ..errors import DataError, RpnetError
from ..io import atomic_write_bytes, read_jsonl
from ..layout import LOG, WorkDir, update_metrics
from ..losses import segmentation_loss
from ..metrics import ConfusionMatrix
from ..models.build import build_seg_model, seg_backbone
from ..predict import Predictor, SegmentationSpec, save_segmentation_weights
from ..runtime import resolve_device, seed_everything, to_memory_format, use_channels_last

log = logging.getLogger(__name__)

NAME = "train-seg"


def resolve_init(cfg: Config) -> str:
    """``train_seg.backbone_init`` with ``auto`` resolved to pretrained, classifier or scratch."""
    init = cfg.train_seg.backbone_init
    if init != "auto":
        return init
    if cfg.model.pretrained is not None:
        return "pretrained"
    if WorkDir(cfg.work_dir).weights("train-cam").is_file():
        return "classifier"
    return "scratch"


def training_dataset(cfg: Config) -> TaggedImages:
    """The training images with the masks ``train_seg.labels`` names, augmented for segmentation.

    The images are the split's training images (``data.fraction`` applied), as for the classifier,
    so that a reduced-data run trains every stage on the same images; with ``train_seg.untagged:
    background`` (the default) also the images without tags, whose pseudo masks are all background.
    With ``train_seg.calibration_masks`` (the default) the images of the calibration split among them
    train on their own masks in place of their pseudo masks.
    """
    ts = cfg.train_seg
    split = ts.split or cfg.data.train_split
    transform = seg_train_transform(ts.crop_size, ts.scale_range)
    dataset = build_dataset(cfg.data, split, transform, for_training=True, seed=cfg.seed, masks=ts.labels == "gt",
                            untagged=ts.untagged == "background")
    if ts.labels == "gt":
        if not dataset.has_masks:
            raise DataError(f"split {split!r} of {cfg.data.root} has no ground-truth masks for train_seg.labels=gt")
        return dataset
    masks = WorkDir(cfg.work_dir).pseudo_masks
    true = calibration_images(cfg) if ts.calibration_masks else None
    own = {r.id: r for r in true.records} if true is not None else {}
    records = [own.get(r.id) or dataclasses.replace(r, mask=masks / f"{r.id}.png") for r in dataset.records]
    missing = [r.mask for r in records if r.id not in own and not r.mask.is_file()]
    if missing:
        raise RpnetError(f"{len(missing)} of {len(records)} pseudo masks are missing (e.g. {missing[0]}): "
                         "run make-pseudo first (or train on the ground truth with train_seg.labels=gt)")
    used = [r.id for r in records if r.id in own]
    if used:
        log.info("train-seg: %d images of calibration split %r train on their own masks", len(used),
                 cfg.data.calibration_split)
    loader = MasksOf(frozenset(used), true.mask_loader) if used and true.mask_loader is not None else None
    return TaggedImages(records, dataset.class_names, transform=transform, mask_loader=loader, seed=cfg.seed)


def make_optimizer(net: nn.Module, cfg: Config) -> torch.optim.SGD:
    """SGD with the backbone at ``train_seg.lr`` and the head at ``head_lr_mult`` times it."""
    ts = cfg.train_seg
    backbone_params, head_params = net.parameter_groups()
    groups = sgd_param_groups(backbone_params, head_params, ts.lr, ts.weight_decay, ts.head_lr_mult)
    return torch.optim.SGD(groups, lr=ts.lr, momentum=ts.momentum)


def check(cfg: Config) -> None:
    """What can be checked before any stage runs: the batch fits the training images."""
    check_batch("train_seg.batch_size", cfg.train_seg.batch_size, len(training_images(cfg, cfg.train_seg.split)))


def validation(cfg: Config, net: nn.Module, spec: SegmentationSpec, device: torch.device,
               out_dir: Path) -> Callable[[Progress], dict[str, float]] | None:
    """The epoch-end check of ``train_seg.val_every``: mIoU of the model on ``data.eval_split`` (one scale,
    no flip, no CRF; the images that have masks), and the best epoch's weights kept as ``best.safetensors``.
    None when it is off or the split has no masks. Under torchrun each rank scores its share."""
    every = cfg.train_seg.val_every
    split = cfg.data.eval_split
    if not every:
        return None
    try:
        dataset = scored_dataset(cfg, split, "the segmentation model during training")
    except DataError:
        dataset = None
    if dataset is None or not len(dataset):
        log.info("train-seg: split %r has no masks (outside the calibration split): no validation during training",
                 split)
        return None
    # A resumed run continues from the best figure its log holds (the log is cut back to the checkpoint).
    best = {"miou": max((r["val_miou"] for r in read_jsonl(out_dir / LOG) if "val_miou" in r), default=-1.0)}

    def validate(progress: Progress) -> dict[str, float]:
        if progress.epoch % every and progress.epoch != cfg.train_seg.epochs:
            return {}
        predictor = Predictor(net, spec, device=device, tile_size=None)  # puts the net in eval mode
        matrix = ConfusionMatrix(len(spec.class_names))
        for i in shard(range(len(dataset)), world()):
            sample = dataset[i]
            matrix.update(sample["mask"], predictor(sample["image"]))
        matrix.matrix = all_reduce_sum(matrix.matrix)
        miou = round(matrix.miou() * 100, 2)
        if miou > best["miou"]:
            best["miou"] = miou
            if world().is_main:
                save_segmentation_weights(WorkDir(cfg.work_dir).seg_best_weights, net, spec)
        log.info("train-seg: epoch %d, val mIoU %.2f on %d images of %r (best %.2f)", progress.epoch, miou,
                 len(dataset), split, best["miou"])
        return {"val_miou": miou}

    return validate


def run(cfg: Config, *, resume: bool = False) -> Path:
    """Train the segmentation model and return the path of its weights.

    Under torchrun ``train_seg.batch_size`` is the global batch: each rank takes its slice of
    every step's batch (:func:`~rpnet.engine.distributed.epoch_batches`) and DDP averages the gradients.
    """
    out_dir = stage_dir(cfg, NAME)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    ts = cfg.train_seg
    current = world()
    per_rank = split_batch(ts.batch_size, current.size, key="train_seg.batch_size")
    dataset = training_dataset(cfg)
    check_batch("train_seg.batch_size", ts.batch_size, len(dataset))
    steps_per_epoch = len(dataset) // ts.batch_size
    init = resolve_init(cfg)
    channels_last = use_channels_last(device, cfg.engine.channels_last)
    net = build_seg_model(ts, cfg.model, len(dataset.class_names), init, WorkDir(cfg.work_dir).weights("train-cam"))
    net = to_memory_format(net.to(device), channels_last)
    optimizer = make_optimizer(net, cfg)
    model = wrap_model(net, device, sync_bn=cfg.engine.sync_bn)
    if current.rank:
        torch.manual_seed(rank_seed(cfg.seed, current.rank))  # rank 0 keeps the single-process stream
    log.info("train-seg: %s on %s (output stride %d, backbone from %s), %s labels, %d images, %d epochs x %d "
             "steps, batch %d = %d rank(s) x %d, crop %d", ts.architecture, seg_backbone(ts, cfg.model), ts.output_stride, init,
             ts.labels, len(dataset), ts.epochs, steps_per_epoch, ts.batch_size, current.size, per_rank, ts.crop_size)

    def batches(epoch: int, skip: int):
        dataset.set_epoch(epoch)
        plan = epoch_batches(len(dataset), ts.batch_size, cfg.seed, epoch, current.size, current.rank,
                             key="train_seg.batch_size")[skip:]
        return DataLoader(dataset, batch_sampler=plan, collate_fn=collate, num_workers=cfg.data.num_workers,
                          pin_memory=device.type == "cuda")

    def step(batch):
        images = to_memory_format(batch["image"].to(device, non_blocking=True), channels_last)
        masks = batch["mask"].to(device, non_blocking=True)
        # The loss in float32: a softmax over many classes loses precision in half precision.
        return {"loss": segmentation_loss(model(images).float(), masks)}

    settings = LoopSettings(epochs=ts.epochs, steps_per_epoch=steps_per_epoch, poly_power=ts.poly_power,
                            amp=ts.amp, log_every=ts.log_every, max_steps=ts.max_steps, global_batch=ts.batch_size,
                            trace=cfg.engine.trace_ranks, tensorboard=cfg.engine.tensorboard)
    spec = SegmentationSpec(ts.architecture, seg_backbone(ts, cfg.model), ts.output_stride, tuple(dataset.class_names),
                            IMAGENET_MEAN, IMAGENET_STD)
    weights = train(model, optimizer, batches, step, settings, out_dir, device=device, resume=resume,
                    on_epoch_end=validation(cfg, net, spec, device, out_dir))
    if current.is_main:
        work = WorkDir(cfg.work_dir)
        last = save_segmentation_weights(work.seg_last_weights, net, spec)  # now with what predict needs
        curve = curve_metrics(read_jsonl(out_dir / LOG), ts.epochs)
        best = ts.keep == "best" and "seg_val_peak" in curve and work.seg_best_weights.is_file()
        atomic_write_bytes(weights, (work.seg_best_weights if best else last).read_bytes())
        curve["seg_model_epoch"] = curve["seg_val_peak_epoch"] if best else ts.epochs
        update_metrics(cfg.work_dir, **curve)
        if "seg_val_peak" in curve:
            log.info("train-seg: val mIoU peaked at %.2f (epoch %d of %d) and ended at %.2f; %s holds epoch %d's "
                     "weights (train_seg.keep: %s)", curve["seg_val_peak"], curve["seg_val_peak_epoch"], ts.epochs,
                     curve["seg_val_last"], weights.name, curve["seg_model_epoch"], ts.keep)
    barrier()  # the final weights exist before any rank reads them
    log.info("train-seg: weights written to %s", weights)
    return weights


def curve_metrics(records: list[dict], epochs: int) -> dict[str, float | int]:
    """The validation curve of a training log in brief: ``seg_val_peak`` (the best ``val_miou``, the earliest
    epoch on a tie), ``seg_val_peak_epoch`` (1-based), ``seg_val_last`` (the last one logged); ``seg_epochs``
    always. Without any validation only ``seg_epochs``."""
    checks = [(r["epoch"] + 1, r["val_miou"]) for r in records if "val_miou" in r]
    if not checks:
        return {"seg_epochs": epochs}
    epoch, peak = max(checks, key=lambda c: (c[1], -c[0]))
    return {"seg_epochs": epochs, "seg_val_peak": peak, "seg_val_peak_epoch": epoch, "seg_val_last": checks[-1][1]}
