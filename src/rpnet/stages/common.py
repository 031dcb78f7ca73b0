"""What stages share: their folder in the work dir (with the resolved config inside), and the image sets they read."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Config, save_config
from ..data.build import build_dataset, outside_calibration_split
from ..data.dataset import TaggedImages
from ..data.dataset import Transform
from ..errors import ConfigError, DataError
from ..layout import WorkDir
from ..workdir import mark

log = logging.getLogger(__name__)


def stage_dir(cfg: Config, name: str) -> Path:
    """Stage ``name``'s folder (:meth:`rpnet.layout.WorkDir.stage`), created and marked as rpnet's
    (:func:`rpnet.workdir.mark`), with the config this stage runs with written into it."""
    work = WorkDir(cfg.work_dir)
    out = mark(work.stage(name))
    save_config(cfg, work.stage_config(name))
    return out


def scored_dataset(cfg: Config, split: str, what: str) -> TaggedImages:
    """The images of ``split`` that have ground-truth masks, for scoring ``what``, without the images of
    the calibration split (the masks values were chosen on are never scored); it may be empty when every
    image with a mask is a calibration image. A DataError when no image of the split has a mask."""
    dataset = build_dataset(cfg.data, split, masks=True)
    if not dataset.has_masks:
        raise DataError(f"split {split!r} of {cfg.data.root} has no masks to score {what} against")
    if dataset.mask_loader is None:  # mask files: score the images that have one (a loader may paint any image)
        with_masks = [i for i, r in enumerate(dataset.records) if r.mask is not None]
        if len(with_masks) < len(dataset):
            log.info("scoring %s on the %d of %d images of split %r that have masks", what, len(with_masks),
                     len(dataset), split)
            dataset = dataset.subset(with_masks)
    outside = outside_calibration_split(dataset, cfg.data)
    if len(outside) < len(dataset):
        log.info("scoring %s on %d images of split %r: the %d of calibration split %r are left out", what,
                 len(outside), split, len(dataset) - len(outside), cfg.data.calibration_split)
    return outside


def training_images(cfg: Config, split: str | None = None) -> TaggedImages:
    """The images a training stage learns from: ``split`` (default ``data.train_split``), untagged
    images dropped and ``data.fraction`` applied, no transform and no masks (for counting)."""
    return build_dataset(cfg.data, split or cfg.data.train_split, for_training=True, seed=cfg.seed)


def ir_label_dataset(cfg: Config, transform: Transform | None = None) -> TaggedImages:
    """The images stages 4 and 5 use: ``ir_label.split`` (default: the train split) as training
    data, i.e. untagged images dropped and ``data.fraction`` applied, as for the classifier."""
    split = cfg.ir_label.split or cfg.data.train_split
    return build_dataset(cfg.data, split, transform, for_training=True, seed=cfg.seed)


def check_batch(key: str, batch_size: int, images: int, per_batch: int | None = None) -> None:
    """A ConfigError when ``images`` training images fill no batch of ``batch_size``.

    ``per_batch``: how many images a batch draws from the dataset when that is not ``batch_size``
    (stage 1 draws batch_size / K anchor images and adds K - 1 partners to each).
    """
    need = batch_size if per_batch is None else per_batch
    if images < need:
        what = f"{need} images" if per_batch is None else f"{need} anchor images ({batch_size} in groups)"
        raise ConfigError(f"{key} {batch_size} needs at least {what} per step, but there are {images} "
                          f"training images: lower {key}")
