"""``rpnet export-masks WORK_DIR --out DIR``: a run's pseudo masks, for review in a labelling tool.

make-pseudo writes ``WORK_DIR/make_pseudo/masks/<id>.png`` (VOC palette: 0 background, k + 1 for
class k of the class list, 255 ignore) named by image id, with the class names in the run's
config only. A labelling tool (CVAT, Label Studio, ...) wants masks named after the image files
and a list of classes beside them, or one COCO instances file. Two formats:

- ``png``: ``OUT/masks/<image file stem>.png``, the same palette PNGs (255 kept: "not sure"), and
  ``OUT/classes.txt``, background first: the ``masks/`` + ``classes.txt`` of the ``folder``
  dataset layout, so reviewed masks can go back in as ground truth.
- ``coco``: ``OUT/instances.json``, one COCO instances file. Its categories are the classes
  without the background, category id = mask label (class k -> k + 1). Its annotations are one
  per (image, class present): the class's whole region in that image as one compressed RLE,
  not one per connected piece. The masks are semantic: touching objects of a class are one
  region and no piece is known to be an object, while the speckles a random walk leaves would
  each become an annotation to click through. ``iscrowd`` is 0: 1 would tell COCO tools the
  region holds an unknown number of objects to ignore (COCOeval skips crowd regions, and
  rpnet's own COCO reader paints them as ignore, 255), which is not what a pseudo mask says;
  pycocotools reads an RLE segmentation whatever the flag. Ignore pixels (255) and the
  background are not exported. ``area`` and ``bbox`` are pycocotools' ``area`` / ``toBbox`` of
  the RLE.

The config is the one make-pseudo ran with (``WORK_DIR/make_pseudo/config.yaml``, else the one
``rpnet run`` saved in the work dir); the images, their file names and the class list come from
its dataset (:func:`rpnet.data.build.build_dataset`), which must still be where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .config import Config, load_config
from .data.build import build_dataset
from .errors import DataError
from .io import IGNORE_INDEX, atomic_write_text, load_mask, save_mask, write_json
from .layout import WorkDir

FORMATS = ("png", "coco")
MASK_FOLDER = "masks"
CLASSES_FILE = "classes.txt"
COCO_FILE = "instances.json"


@dataclass(frozen=True)
class PseudoMask:
    """One exported mask: the image file it labels and the pseudo-mask PNG."""

    image: Path
    mask: Path


def run_config(work_dir: str | Path) -> Config:
    """The config the pseudo masks were made with: make-pseudo's copy, else ``rpnet run``'s, pointed at ``work_dir``."""
    work = WorkDir(work_dir)
    for path in (work.stage_config("make-pseudo"), work.config):
        if path.is_file():
            return load_config(path, [f"work_dir={work.root}"])
    raise DataError(f"no {work.stage_config('make-pseudo')} or {work.config}: is {work.root} a work dir where "
                    "make-pseudo ran?")


def check_current(work_dir: str | Path) -> None:
    """A DataError when make-pseudo's masks are stale: made from inputs that have changed since (a config key,
    the class list, the splits; what ``rpnet status`` calls stale). Masks of a work dir without ``rpnet run``'s
    config pass: nothing says what they should be."""
    from .pipeline.state import stage_statuses

    work = WorkDir(work_dir)
    if not work.config.is_file():
        return
    try:
        status = stage_statuses(load_config(work.config, [f"work_dir={work.root}"]))["make-pseudo"]
    except DataError:
        return  # the dataset cannot be read: pseudo_masks says so
    if status.state == "stale" and status.record is not None:  # rpnet run's record: made from other inputs
        raise DataError(f"the pseudo masks in {work.pseudo_masks} are stale: what they were made from has changed "
                        f"since (`rpnet status {work.root}`); run `rpnet run` again before exporting them")


def pseudo_masks(work_dir: str | Path) -> tuple[list[PseudoMask], list[str], list[str]]:
    """The pseudo masks of ``work_dir`` with their image files, the class list (background first),
    and the ids of the split's images that have no mask yet (a make-pseudo that has not finished).

    Raises :class:`DataError` when the run's dataset cannot be read or there is no mask at all.
    """
    cfg = run_config(work_dir)
    check_current(work_dir)
    split = cfg.pseudo.split or cfg.data.train_split  # the split make-pseudo labels
    try:
        dataset = build_dataset(cfg.data, split)
    except DataError as exc:
        raise DataError(f"the images the masks label are needed (file names, class list): {exc}") from None
    folder = WorkDir(work_dir).pseudo_masks
    masks, missing = [], []
    for record in dataset.records:
        path = folder / f"{record.id}.png"
        if path.is_file():
            masks.append(PseudoMask(record.image, path))
        else:
            missing.append(record.id)
    if not masks:
        raise DataError(f"no pseudo masks in {folder}: run make-pseudo (or `rpnet run`) first")
    stems = [m.image.stem for m in masks]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise DataError(f"images of different folders share the file names {twice}: their masks would overwrite "
                        "each other")
    return masks, list(dataset.class_names), missing


def read_labels(path: Path, num_classes: int) -> np.ndarray:
    """A pseudo mask as (H, W) uint8 labels 0..num_classes or 255; a DataError for a label outside them."""
    labels = load_mask(path)
    bad = (labels > num_classes) & (labels != IGNORE_INDEX)
    if bad.any():
        raise DataError(f"{path}: label {int(labels[bad].max())} is not a class of the run's class list "
                        f"(labels 0..{num_classes} and {IGNORE_INDEX})")
    return labels


def class_regions(labels: np.ndarray) -> list[dict[str, Any]]:
    """One COCO annotation body per class in an (H, W) label map: the class's whole region as compressed
    RLE (counts a str), ``category_id`` = label, ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0; in label
    order, without ``id`` and ``image_id``. Background (0) and ignore (255) give none."""
    annotations = []
    for label in np.unique(labels):
        if label in (0, IGNORE_INDEX):
            continue
        rle = mask_utils.encode(np.asfortranarray(labels == label, dtype=np.uint8))
        annotations.append({
            "category_id": int(label),
            "segmentation": {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": 0,
        })
    return annotations


def coco_instances(masks: Sequence[PseudoMask], class_names: Sequence[str]) -> dict[str, Any]:
    """The COCO instances document of ``masks`` (see the module docstring): image ids 1..N in order,
    annotation ids 1..M, categories 1..C named from ``class_names`` (background first, left out)."""
    images, annotations = [], []
    for image_id, item in enumerate(masks, start=1):
        labels = read_labels(item.mask, len(class_names) - 1)
        height, width = labels.shape
        images.append({"id": image_id, "file_name": item.image.name, "width": int(width), "height": int(height)})
        for region in class_regions(labels):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **region})
    categories = [{"id": label, "name": name, "supercategory": name}
                  for label, name in enumerate(class_names) if label > 0]
    return {"info": {"description": "rpnet pseudo masks"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}


def export_png(masks: Sequence[PseudoMask], class_names: Sequence[str], out: Path) -> Path:
    """``out/masks/<image stem>.png`` for each mask and ``out/classes.txt``; returns ``out``."""
    for item in masks:
        save_mask(out / MASK_FOLDER / f"{item.image.stem}.png", read_labels(item.mask, len(class_names) - 1))
    atomic_write_text(out / CLASSES_FILE, "".join(f"{name}\n" for name in class_names))
    return out


def export_masks(work_dir: str | Path, out: str | Path, fmt: str = "png") -> tuple[Path, int, list[str]]:
    """Export the pseudo masks of ``work_dir`` into ``out`` as ``fmt`` (:data:`FORMATS`).

    Returns what was written (the folder for png, the JSON file for coco), how many masks, and the
    ids still without a mask.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r}; choose from {list(FORMATS)}")
    masks, class_names, missing = pseudo_masks(work_dir)
    out = Path(out)
    if fmt == "png":
        written = export_png(masks, class_names, out)
    else:
        written = write_json(out / COCO_FILE, coco_instances(masks, class_names))
    return written, len(masks), missing


__all__ = ["FORMATS", "PseudoMask", "run_config", "pseudo_masks", "read_labels", "class_regions", "coco_instances",
           "export_png", "export_masks"]
