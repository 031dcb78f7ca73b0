"""One dataset type for every layout: images with image-level tags and optional masks.

Each layout module (``voc``, ``coco``, ``folder``) turns its files into a list of
:class:`ImageRecord` plus a class list; :class:`TaggedImages` reads them. Tags are
*foreground* class indices ``0..C-1``: class-list index minus one, because the
class list puts background first. In a mask, label ``k + 1`` is tag ``k``, ``0`` is
background and ``255`` (``rpnet.io.IGNORE_INDEX``) is "don't care".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError
from ..io import IGNORE_INDEX, load_mask
from .images import read_image

logger = logging.getLogger(__name__)

MAX_IDS_REPORTED = 5  # how many example ids a warning lists


@dataclass(frozen=True)
class ImageRecord:
    """One image: its id (unique in the dataset), file, foreground tags and mask file."""

    id: str
    image: Path
    tags: tuple[int, ...]
    mask: Path | None = None


# A mask loader builds the (H, W) uint8 label map of a record, or returns None when the
# image has no ground truth. COCO uses one to paint masks from polygons without files.
MaskLoader = Callable[[ImageRecord], "np.ndarray | None"]
# A transform receives the sample dict and a generator seeded by (seed, epoch, index).
Transform = Callable[[dict[str, Any], np.random.Generator], Any]


def read_mask_file(record: ImageRecord) -> np.ndarray | None:
    """The default mask loader: ``record.mask`` as (H, W) uint8 labels, None when it has none."""
    if record.mask is None:
        return None
    path = Path(record.mask)
    if not path.is_file():
        raise DataError(f"mask not found: {path}")
    try:
        return load_mask(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read mask {path}: {exc}") from None


@dataclass(frozen=True)
class MasksOf:
    """A mask loader that reads the masks of the images ``ids`` with ``loader`` (a layout's own: COCO's
    painter, VOC's SBD reader) and every other record's mask file. Picklable, for spawned workers."""

    ids: frozenset[str]
    loader: MaskLoader

    def __call__(self, record: ImageRecord) -> np.ndarray | None:
        return self.loader(record) if record.id in self.ids else read_mask_file(record)


class TaggedImages(Dataset):
    """Images with multi-hot tags (and masks when the layout has them).

    ``dataset[i]`` is a dict:

    - ``"image"``: (H, W, 3) uint8 RGB
    - ``"tags"``: (C,) float32 multi-hot over the C foreground classes
    - ``"mask"``: (H, W) uint8 labels, 0 background, k + 1 for tag k, 255 ignore; present
      only when :attr:`has_masks`. An image without ground truth gets an all-255 mask.
    - ``"id"``: str, ``"index"``: int (``i``)

    With a ``transform``, ``transform(sample, rng)`` is returned instead, where
    ``rng = np.random.default_rng([seed, epoch, i])``: augmentation depends only on the
    seed, the epoch (:meth:`set_epoch`) and the index, never on the number of
    DataLoader workers or the order they run in. Call :meth:`set_epoch` in the main
    process before each epoch's iterator is created (persistent workers keep the copy
    they were started with).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        transform: Transform | None = None,
        mask_loader: MaskLoader | None = None,
        seed: int = 0,
    ) -> None:
        if len(class_names) < 2:
            raise ValueError(f"class_names needs background first and at least one class, got {list(class_names)}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative (numpy seeds its generator from it), got {seed}")
        self._records = tuple(records)
        self._class_names = tuple(class_names)
        num_classes = len(self._class_names) - 1
        for record in self._records:
            bad = [t for t in record.tags if not 0 <= t < num_classes]
            if bad:
                raise DataError(f"image {record.id}: tags {bad} are outside 0..{num_classes - 1}")
        self._transform = transform
        self._mask_loader = mask_loader
        self._has_masks = mask_loader is not None or any(r.mask is not None for r in self._records)
        self._seed = int(seed)
        self._epoch = 0

    # ------------------------------------------------------------------ the Dataset protocol

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Any:
        n = len(self._records)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        index %= n
        record = self._records[index]
        image = read_image(record.image)
        sample: dict[str, Any] = {
            "image": image,
            "tags": self._multi_hot(record.tags),
            "id": record.id,
            "index": index,
        }
        if self._has_masks:
            sample["mask"] = self._read_mask(record, image.shape[:2])
        if self._transform is None:
            return sample
        rng = np.random.default_rng([self._seed, self._epoch, index])
        return self._transform(sample, rng)

    def _multi_hot(self, tags: tuple[int, ...]) -> np.ndarray:
        vector = np.zeros(self.num_classes, dtype=np.float32)
        vector[list(tags)] = 1.0
        return vector

    def _read_mask(self, record: ImageRecord, shape: tuple[int, int]) -> np.ndarray:
        loader = self._mask_loader or read_mask_file
        mask = loader(record)
        where = record.mask or f"the mask of image {record.id}"
        if mask is None:
            return np.full(shape, IGNORE_INDEX, dtype=np.uint8)
        mask = np.asarray(mask)
        if mask.shape != tuple(shape):
            raise DataError(f"{where}: mask is {mask.shape[:2]} but image {record.image} is {tuple(shape)}")
        # A label above C (other than ignore) means the mask and the class list disagree.
        bad = (mask > self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            raise DataError(
                f"{where}: label {int(mask[bad].max())} is not a class of this dataset "
                f"(labels 0..{self.num_classes} and {IGNORE_INDEX})"
            )
        return mask.astype(np.uint8, copy=False)

    # ------------------------------------------------------------------ state

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream for ``epoch`` (see the class docstring)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def class_names(self) -> tuple[str, ...]:
        """All class names, background first (C + 1 of them)."""
        return self._class_names

    @property
    def num_classes(self) -> int:
        """C, the number of foreground classes (the length of a tag vector)."""
        return len(self._class_names) - 1

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self._records]

    @property
    def records(self) -> tuple[ImageRecord, ...]:
        return self._records

    @property
    def has_masks(self) -> bool:
        return self._has_masks

    @property
    def transform(self) -> Transform | None:
        return self._transform

    @property
    def mask_loader(self) -> MaskLoader | None:
        return self._mask_loader

    # ------------------------------------------------------------------ views

    def tag_matrix(self) -> np.ndarray:
        """(N, C) bool: entry (i, c) is True when image i is tagged with class c."""
        matrix = np.zeros((len(self._records), self.num_classes), dtype=bool)
        for row, record in enumerate(self._records):
            matrix[row, list(record.tags)] = True
        return matrix

    def subset(self, indices: Sequence[int] | np.ndarray) -> TaggedImages:
        """A dataset of the images at ``indices`` (in that order), same classes, transform and seed."""
        picked = [self._records[int(i)] for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        subset = TaggedImages(picked, self._class_names, self._transform, self._mask_loader, self._seed)
        subset._has_masks = self._has_masks  # a subset keeps its parent's sample keys
        subset._epoch = self._epoch
        return subset

    def __repr__(self) -> str:
        return (
            f"TaggedImages({len(self)} images, {self.num_classes} classes, "
            f"masks={self._has_masks}, seed={self._seed}, epoch={self._epoch})"
        )


_warned: set[tuple[str, str]] = set()


def warn_once(message: str, *args: object, where: object = "", log: logging.Logger = logger) -> None:
    """Log a warning the first time this process meets it about ``where`` (a dataset's folder): every stage
    of a run reads the same dataset, and the same warning five times is noise."""
    text = message % args
    if (text, str(where)) not in _warned:
        _warned.add((text, str(where)))
        log.warning(text)


def drop_untagged(dataset: TaggedImages) -> TaggedImages:
    """The images that carry at least one tag; the others are reported in one warning.

    A classifier trained from image-level tags learns nothing from an image with none,
    and the group sampler (K images sharing a class) cannot place it.
    """
    keep = [i for i, r in enumerate(dataset.records) if r.tags]
    dropped = [r.id for r in dataset.records if not r.tags]
    if not dropped:
        return dataset
    examples = ", ".join(dropped[:MAX_IDS_REPORTED]) + (", ..." if len(dropped) > MAX_IDS_REPORTED else "")
    warn_once("%d of %d images have no tag and are left out of training: %s", len(dropped), len(dataset), examples,
              where=dataset.records[0].image.parent)
    return dataset.subset(keep)


__all__ = ["ImageRecord", "TaggedImages", "MaskLoader", "Transform", "read_mask_file", "drop_untagged"]
