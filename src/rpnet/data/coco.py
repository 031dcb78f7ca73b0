"""MS COCO 2014: tags and semantic masks from the instance annotations.

Layout under ``root``::

    train2014/*.jpg  val2014/*.jpg  annotations/instances_<split>.json

COCO's 80 category ids run from 1 to 90 with gaps; they are mapped to contiguous
labels 1..80 in increasing category-id order, with names from the JSON (or, when a
class-list file is given, to that file's order by name). Image ids are the file stems
(``COCO_train2014_000000000009``), so outputs are named after the files.

Semantic masks are painted from the instances, there being no mask files:

1. every ``iscrowd`` region is set to 255 (ignore): it holds an unknown number of
   objects whose outlines were never drawn;
2. the other instances are painted over it, largest first by pixel area, so a small
   object lying on a large one (a cup on a table) stays visible; equal areas keep
   the annotation order.

An individually annotated object inside a crowd region therefore keeps its label.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..errors import DataError
from ..io import IGNORE_INDEX
from .dataset import ImageRecord
from .images import read_class_list, safe_join

BACKGROUND = "background"
POLYGON_MIN_COORDS = 6  # a polygon needs three (x, y) points


@dataclass(frozen=True)
class Instance:
    """One annotated object: its COCO segmentation (polygons or RLE), label and crowd flag."""

    segmentation: Any
    label: int  # 1..C (class-list index)
    iscrowd: bool


@dataclass(frozen=True)
class ImageInstances:
    height: int
    width: int
    instances: tuple[Instance, ...]


class CocoMasks:
    """The mask loader of a COCO split: ``loader(record)`` -> (H, W) uint8 semantic labels.

    Holds only each image's size and segmentations, not the whole ``COCO`` object, so
    that DataLoader workers started by ``spawn`` receive a small pickle.
    """

    def __init__(self, images: dict[str, ImageInstances], source: Path) -> None:
        self._images = images
        self._source = source

    def __call__(self, record: ImageRecord) -> np.ndarray:
        if record.id not in self._images:
            raise DataError(f"{self._source}: no annotations for image {record.id!r}")
        entry = self._images[record.id]
        return paint_semantic_mask(entry.height, entry.width, entry.instances)


def load_coco(
    root: str | Path, split: str, classes: str | Path | None = None
) -> tuple[list[ImageRecord], list[str], CocoMasks]:
    """Records of one COCO split (``"train2014"``, ``"val2014"``), the class list, the mask loader.

    Records are in increasing COCO image-id order; their tags are the classes of all
    the image's annotations, crowd ones included (a crowd of people means a person is
    there). Raises :class:`DataError` naming the file for a missing annotation file,
    a missing image, or a category that is not in the class list.
    """
    root = Path(root)
    ann_file = root / "annotations" / f"instances_{split}.json"
    coco = _read_annotations(ann_file)
    label_of, class_names = _category_labels(coco, ann_file, classes)
    image_dir = root / split
    records: list[ImageRecord] = []
    images: dict[str, ImageInstances] = {}
    for coco_id in sorted(coco.imgs):
        info = coco.imgs[coco_id]
        path = safe_join(image_dir, info["file_name"])
        if not path.is_file():
            raise DataError(f"{ann_file}: image {info['file_name']!r} not found at {path}")
        image_id = Path(info["file_name"]).stem
        if image_id in images:
            raise DataError(f"{ann_file}: two images are named {image_id!r}")
        instances = []
        for ann in coco.imgToAnns.get(coco_id, []):
            if ann["category_id"] not in label_of:
                raise DataError(f"{ann_file}: annotation {ann.get('id')} has unknown category {ann['category_id']}")
            if "segmentation" not in ann:
                raise DataError(f"{ann_file}: annotation {ann.get('id')} has no segmentation")
            instances.append(
                Instance(ann["segmentation"], label_of[ann["category_id"]], bool(ann.get("iscrowd", 0)))
            )
        tags = tuple(sorted({inst.label - 1 for inst in instances}))
        records.append(ImageRecord(id=image_id, image=path, tags=tags))
        images[image_id] = ImageInstances(int(info["height"]), int(info["width"]), tuple(instances))
    return records, class_names, CocoMasks(images, ann_file)


def _read_annotations(path: Path) -> COCO:
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("instances_*.json")) if path.parent.is_dir() else []
        raise DataError(f"COCO annotation file not found: {path} (found: {found or 'none'})")
    try:
        # pycocotools prints progress to stdout; keep the command's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AssertionError) as exc:
        raise DataError(f"cannot read COCO annotations {path}: {exc!r}") from None


def _category_labels(
    coco: COCO, ann_file: Path, classes: str | Path | None
) -> tuple[dict[int, int], list[str]]:
    """Category id -> label 1..C, and the class list (background first)."""
    categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    names = [c["name"] for c in categories]
    if len(set(names)) != len(names):
        raise DataError(f"{ann_file}: category names repeat: {names}")
    if classes is None:
        class_names = [BACKGROUND, *names]
        return {c["id"]: label for label, c in enumerate(categories, start=1)}, class_names
    class_names = read_class_list(classes)
    position = {name: i for i, name in enumerate(class_names)}
    missing = [n for n in names if position.get(n, 0) == 0]
    if missing:
        raise DataError(f"{ann_file}: categories {missing} are not in the class list {classes}")
    return {c["id"]: position[c["name"]] for c in categories}, class_names


def instance_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, RLE or uncompressed RLE) as an (H, W) uint8 0/1 mask.

    What ``COCO.annToMask`` computes, without needing the ``COCO`` object.
    """
    if isinstance(segmentation, list):
        # pycocotools reads a first polygon of 4 numbers as a box, so drop degenerate ones.
        polygons = [p for p in segmentation if len(p) >= POLYGON_MIN_COORDS]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    with warnings.catch_warnings():
        # pycocotools' compiled decode predates numpy 2's copy keyword and warns on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


def paint_semantic_mask(height: int, width: int, instances: tuple[Instance, ...]) -> np.ndarray:
    """(H, W) uint8 labels: crowd regions 255, then instances largest first (see the module doc)."""
    semantic = np.zeros((height, width), dtype=np.uint8)
    drawn = []
    for inst in instances:
        region = instance_mask(inst.segmentation, height, width).astype(bool)
        if inst.iscrowd:
            semantic[region] = IGNORE_INDEX
        else:
            drawn.append((region, inst.label))
    # sorted() is stable: equal areas keep the annotation order.
    for region, label in sorted(drawn, key=lambda item: -int(item[0].sum())):
        semantic[region] = label
    return semantic


__all__ = ["load_coco", "CocoMasks", "Instance", "ImageInstances", "instance_mask", "paint_semantic_mask"]
