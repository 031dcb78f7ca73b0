"""``build_dataset``: a :class:`DataConfig` and a split name in, a :class:`TaggedImages` out.

The one place that decides, for training, which images are used: untagged images
are reported and left out, then ``data.fraction`` keeps a stratified share of each
class (Table II).
"""

from __future__ import annotations

import dataclasses

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .coco import load_coco
from .dataset import ImageRecord, MaskLoader, TaggedImages, Transform, drop_untagged, warn_once
from .folder import load_folder
from .images import safe_join
from .subsets import stratified_fraction
from .voc import SPLIT_FOLDER, load_voc, read_split, voc_mask_loader

logger = logging.getLogger(__name__)

Loaded = tuple[list[ImageRecord], list[str], "MaskLoader | None"]


def _voc(data: DataConfig, root: Path, split: str) -> Loaded:
    records, class_names = load_voc(root, split, classes=data.classes, sbd_root=data.sbd_root)
    # SBD masks are .mat files that only voc_mask_loader reads; PNG-only splits need no loader.
    needs_loader = any(r.mask is not None and r.mask.suffix == ".mat" for r in records)
    return records, class_names, voc_mask_loader if needs_loader else None


def _coco(data: DataConfig, root: Path, split: str) -> Loaded:
    return load_coco(root, split, classes=data.classes)


def _folder(data: DataConfig, root: Path, split: str) -> Loaded:
    drawn = splits_drawn(data) and split in (data.train_split, data.eval_split)
    records, class_names = load_folder(root, split, classes=data.classes, note_every_image=not drawn)
    if drawn:  # every image: eval_split is the drawn share, train_split the rest
        held = validation_ids(data, records)
        records = [r for r in records if (r.id in held) == (split == data.eval_split)]
    return records, class_names, None


VAL_SEED = 0  # the draw of data.val_fraction: the same validation images whatever the run's seed


def splits_drawn(data: DataConfig) -> bool:
    """Whether ``data.val_fraction`` draws the splits: folder layout, neither split file there."""
    return (data.format == "folder" and data.val_fraction > 0 and data.root is not None
            and not any((Path(data.root) / f"{s}.txt").is_file() for s in (data.train_split, data.eval_split)))


def validation_ids(data: DataConfig, records: list[ImageRecord]) -> set[str]:
    """The ids ``data.val_fraction`` holds out of ``records`` (every image of a folder dataset) for
    ``data.eval_split``: a class-stratified share (:func:`~rpnet.data.subsets.stratified_fraction`, seeded
    by :data:`VAL_SEED`) of the tagged images that have masks, of all tagged images when none has; the
    calibration split's images stay in training. One log line says how many."""
    calibration = set(calibration_split_entries(data))
    usable = [r for r in records if r.tags and r.id not in calibration and r.image.name not in calibration]
    with_masks = [r for r in usable if r.mask is not None]
    pool = with_masks or usable
    if not pool:
        return set()
    num_classes = 1 + max(max(r.tags) for r in pool)
    tags = np.zeros((len(pool), num_classes), dtype=bool)
    for i, record in enumerate(pool):
        tags[i, list(record.tags)] = True
    held = {pool[i].id for i in stratified_fraction(tags, data.val_fraction, VAL_SEED)}
    warn_once("data.val_fraction %.3g: %d of the %d tagged images %s are split %r, the other images %r (no "
              "split files in %s)", data.val_fraction, len(held), len(pool),
              "with masks" if with_masks else "(none has a mask)", data.eval_split, data.train_split, data.root,
              where=data.root)
    return held


LOADERS: dict[str, Callable[[DataConfig, Path, str], Loaded]] = {
    "voc": _voc,
    "coco": _coco,
    "folder": _folder,
}


def build_dataset(
    data: DataConfig,
    split: str,
    transform: Transform | None = None,
    *,
    for_training: bool = False,
    seed: int = 0,
    masks: bool = False,
    untagged: bool = False,
) -> TaggedImages:
    """The images of ``split`` in the layout ``data.format`` names, under ``data.root``.

    ``transform(sample, rng)`` is applied per sample (see :class:`TaggedImages`), with
    ``seed`` seeding augmentation. With ``for_training``, images without tags are
    dropped (one warning lists them) and ``data.fraction < 1`` keeps a seeded,
    class-stratified subset. Ground truth is for scoring only: the samples carry ``"mask"`` only
    with ``masks=True`` (the eval stages, and train-seg's ground-truth upper bound), so no other
    stage can open a mask file. ``untagged`` (with ``for_training``): keep the images without tags
    too, after the tagged ones (the same fraction of them, seeded): segmentation training takes
    them as all-background examples. Raises :class:`ConfigError` for an unknown format and
    :class:`DataError` when ``data.root`` is unset or missing or the split is empty.
    """
    if data.format not in LOADERS:
        raise ConfigError(f"unknown data.format {data.format!r}; choose from {sorted(LOADERS)}")
    if seed < 0:
        raise ConfigError(f"seed must be non-negative, got {seed}")
    if data.root is None:
        raise DataError("data.root is not set: point it at the dataset folder (--set data.root=PATH)")
    root = Path(data.root)
    if not root.is_dir():
        raise DataError(f"data.root {root} is not a folder (set it with --set data.root=DIR; `rpnet synth DIR` writes a synthetic dataset)")
    records, class_names, mask_loader = LOADERS[data.format](data, root, split)
    if not masks:
        records, mask_loader = [dataclasses.replace(r, mask=None) for r in records], None
    dataset = TaggedImages(records, class_names, transform=transform, mask_loader=mask_loader, seed=seed)
    if for_training:
        negatives = None
        if untagged:  # kept aside, added back after the fraction of the tagged images is taken
            negatives = dataset.subset([i for i, r in enumerate(dataset.records) if not r.tags])
            dataset = dataset.subset([i for i, r in enumerate(dataset.records) if r.tags])
        else:
            dataset = drop_untagged(dataset)
        if data.fraction < 1.0:
            keep = stratified_fraction(dataset.tag_matrix(), data.fraction, seed)
            logger.info(
                "data.fraction %.4g: training on %d of %d images of split %r",
                data.fraction, len(keep), len(dataset), split,
            )
            dataset = dataset.subset(keep)
        if negatives is not None and len(negatives):
            count = len(negatives) if data.fraction == 1.0 else round(data.fraction * len(negatives))
            picked = np.sort(np.random.default_rng(seed).permutation(len(negatives))[:count])
            logger.info("%d images without tags are kept as background examples", count)
            dataset = TaggedImages([*dataset.records, *negatives.subset(picked).records], class_names,
                                   transform=transform, mask_loader=mask_loader, seed=seed)
    if len(dataset) == 0:
        raise DataError(f"split {split!r} of {root} ({data.format}) has no usable images")
    return dataset


def calibration_split_file(data: DataConfig) -> Path | None:
    """Where ``data.calibration_split`` is listed: VOC ``ImageSets/Segmentation/NAME.txt``, folder and
    COCO ``NAME.txt`` in ``data.root``; None when no calibration split is set."""
    if data.calibration_split is None or data.root is None:
        return None
    folder = Path(data.root) / SPLIT_FOLDER if data.format == "voc" else Path(data.root)
    return safe_join(folder, f"{data.calibration_split}.txt")


def calibration_split_entries(data: DataConfig) -> list[str]:
    """The lines of the calibration split's file (image ids or file names; ``#`` comments left out);
    [] without a calibration split; a DataError for a missing or empty file."""
    path = calibration_split_file(data)
    if path is None:
        return []
    entries = [e for e in read_split(path) if not e.startswith("#")]
    if not entries:
        raise DataError(f"calibration split {path} lists no image")
    return entries


def outside_calibration_split(dataset: TaggedImages, data: DataConfig) -> TaggedImages:
    """``dataset`` without the images of ``data.calibration_split`` (what the eval stages score: the
    images thresholds were chosen on are never scored); ``dataset`` itself without a calibration split."""
    entries = set(calibration_split_entries(data))
    if not entries:
        return dataset
    return dataset.subset([i for i, r in enumerate(dataset.records) if r.id not in entries
                           and r.image.name not in entries])


def calibration_dataset(data: DataConfig, transform: Transform | None = None) -> TaggedImages | None:
    """The images of ``data.calibration_split`` with their masks, in the split file's order; None without one.

    The split names training images (of ``data.train_split``) that have masks: the one set of masks
    the user declares as input, from which the stages choose their ``auto`` values
    (:mod:`rpnet.calibration`) and which train-seg may train on; no eval stage scores them. Each line
    is an image id (the file stem) or, in the folder layout, the image's file name. Raises
    :class:`DataError` naming the file and the images for a missing or empty list, an image that is
    not a training image, or one without a mask.
    """
    path = calibration_split_file(data)
    if path is None:
        return None
    entries = calibration_split_entries(data)
    train = build_dataset(data, data.train_split, transform, masks=True)
    position = {r.id: i for i, r in enumerate(train.records)}
    position.update({r.image.name: i for i, r in enumerate(train.records)})
    outside = [e for e in entries if e not in position]
    if outside:
        raise DataError(f"calibration split {path}: {len(outside)} image(s) are not in the training split "
                        f"{data.train_split!r}: {', '.join(outside[:MAX_LISTED])}")
    picked = [position[e] for e in entries]
    if len(set(picked)) < len(picked):
        raise DataError(f"calibration split {path} lists an image twice (by id and by file name)")
    dataset = train.subset(picked)
    loader = dataset.mask_loader  # COCO's paints every image; VOC's reads SBD's .mat files
    without = [r.id for r in dataset.records if r.mask is None and (loader is None or loader(r) is None)]
    if without:
        raise DataError(f"calibration split {path}: {len(without)} image(s) have no mask: "
                        f"{', '.join(without[:MAX_LISTED])} (a calibration image needs its mask)")
    return dataset


MAX_LISTED = 10  # image names an error lists


__all__ = ["build_dataset", "calibration_dataset", "calibration_split_entries", "calibration_split_file",
           "outside_calibration_split", "LOADERS"]
