"""``rpnet export-masks WORK_DIR --out DIR``: a run's pseudo masks, for review in a labelling tool.

make-pseudo writes ``WORK_DIR/make_pseudo/masks/<id>.png`` (VOC palette: 0 background, k + 1 for
class k of the class list, 255 ignore) named by image id, with the class names in the run's
config only. A labelling tool (CVAT, Label Studio, labelme, ...) wants masks named after the image
files and a list of classes beside them, outlines, or one COCO instances file. Four formats, each
read back by ``rpnet import-masks`` (:mod:`rpnet.mask_import`) to the same masks, pixel for pixel:

- ``png``: ``OUT/masks/<image file stem>.png``, the same palette PNGs (255 kept: "not sure"), and
  ``OUT/classes.txt``, background first: the ``masks/`` + ``classes.txt`` of the ``folder``
  dataset layout, so reviewed masks can go back in as ground truth.
- ``coco``: ``OUT/instances.json``, one COCO instances file. Its categories are the classes
  without the background, category id = mask label (class k -> k + 1). Its annotations are one
  per (image, class present): the class's whole region in that image, not one per connected
  piece. The masks are semantic: touching objects of a class are one region and no piece is
  known to be an object, while the speckles a random walk leaves would each become an annotation
  to click through. The segmentation is polygons (one per piece, along the pixel edges, which
  pycocotools fills to exactly the region: :func:`edge_loops`), as tools that read only polygons
  need, and a compressed RLE only where polygons cannot hold the region (a hole, two pieces
  touching at a corner). ``iscrowd`` is 0: 1 would tell COCO tools the region holds an unknown
  number of objects to ignore (COCOeval skips crowd regions). Ignore pixels (255), where there
  are any, are one more annotation per image of a category ``__ignore__`` with ``iscrowd`` 1,
  which is what it means to COCO tools (and rpnet's COCO readers paint crowd regions 255). The
  background is not exported. ``area`` and ``bbox`` are pycocotools' ``area`` / ``toBbox``.
- ``labelme``: ``OUT/<image stem>.json``, one labelme file per image (``imagePath`` relative to it,
  so labelme opens the image beside its outlines): one ``polygon`` shape per piece of each class,
  through the centres of its edge pixels (:func:`pixel_outline`), which labelme draws back to
  exactly the piece; a piece no polygon can hold (a hole, a line one pixel wide) is a ``mask``
  shape (labelme 5.3 and later: its bounding box and a base64 PNG). Ignore pixels are shapes
  labelled ``__ignore__``, labelme2voc's name for them.
- ``cvat``: CVAT's "Segmentation mask 1.1" layout: ``OUT/labelmap.txt`` (``name:r,g,b::`` per class,
  the VOC colours, ``__ignore__`` in VOC's (224, 224, 192) where there are ignore pixels),
  ``OUT/SegmentationClass/<image stem>.png`` (RGB) and ``OUT/ImageSets/Segmentation/default.txt``;
  zip the folder to upload it to a CVAT task.

The config is the one make-pseudo ran with (``WORK_DIR/make_pseudo/config.yaml``, else the one
``rpnet run`` saved in the work dir); the images, their file names and the class list come from
its dataset (:func:`rpnet.data.build.build_dataset`), which must still be where it was.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from .config import Config, load_config
from .data.build import build_dataset
from .data.coco import instance_mask
from .errors import DataError
from .io import IGNORE_INDEX, atomic_path, atomic_write_text, load_mask, save_mask, write_json
from .layout import WorkDir
from .mask_import import CVAT_LABELMAP, CVAT_MASKS, IGNORE_LABEL, shape_pixels

FORMATS = ("png", "coco", "labelme", "cvat")
MASK_FOLDER = "masks"
CLASSES_FILE = "classes.txt"
COCO_FILE = "instances.json"
LABELME_VERSION = "5.3.0"  # the first labelme that reads "mask" shapes
CVAT_LIST = "ImageSets/Segmentation/default.txt"
EIGHT = np.ones((3, 3), dtype=bool)  # pieces are 8-connected


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


def edge_loops(region: np.ndarray) -> list[list[tuple[int, int]]] | None:
    """The closed outlines of a (H, W) bool region along its pixels' edges: corner points (x, y), pixel
    (x, y) spanning [x, x + 1] x [y, y + 1] (COCO's coordinates), only the corners where the outline
    turns; outer outlines run clockwise on screen, holes the other way. None where two pieces touch at
    a corner (an outline would pass that corner twice)."""
    padded = np.pad(region.astype(bool), 1)
    inside = padded[1:-1, 1:-1]
    following: dict[tuple[int, int], tuple[int, int]] = {}
    sides = ((padded[:-2, 1:-1], (0, 0), (1, 0)), (padded[1:-1, 2:], (1, 0), (1, 1)),  # top, right
             (padded[2:, 1:-1], (1, 1), (0, 1)), (padded[1:-1, :-2], (0, 1), (0, 0)))  # bottom, left
    for neighbour, (ax, ay), (bx, by) in sides:
        for y, x in zip(*np.nonzero(inside & ~neighbour)):
            start = (int(x) + ax, int(y) + ay)
            if start in following:
                return None
            following[start] = (int(x) + bx, int(y) + by)
    loops = []
    while following:
        start = min(following)
        loop, point = [start], following.pop(start)
        while point != start:
            loop.append(point)
            point = following.pop(point)
        loops.append([p for i, p in enumerate(loop) if not straight(loop[i - 1], p, loop[(i + 1) % len(loop)])])
    return loops


def straight(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> bool:
    """Whether the path a -> b -> c goes on in the same direction at b (b is no corner)."""
    (ux, uy), (vx, vy) = (b[0] - a[0], b[1] - a[1]), (c[0] - b[0], c[1] - b[1])
    return ux * vy == uy * vx and ux * vx + uy * vy > 0


def region_segmentation(region: np.ndarray) -> dict[str, Any] | list[list[float]]:
    """COCO polygons of a (H, W) bool region (:func:`edge_loops`, flat [x1, y1, x2, y2, ...]) when
    pycocotools fills them back to exactly the region, else its compressed RLE (counts a str)."""
    loops = edge_loops(region)
    if loops:
        polygons = [[float(v) for point in loop for v in point] for loop in loops]
        if np.array_equal(instance_mask(polygons, *region.shape).astype(bool), region):
            return polygons
    rle = mask_utils.encode(np.asfortranarray(region, dtype=np.uint8))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def class_regions(labels: np.ndarray, ignore_category: int | None = None) -> list[dict[str, Any]]:
    """One COCO annotation body per class in an (H, W) label map: the class's whole region
    (:func:`region_segmentation`), ``category_id`` = label, ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0;
    in label order, without ``id`` and ``image_id``. Background (0) gives none; ignore (255) one with
    ``ignore_category`` and ``iscrowd`` 1 when that is given, else none."""
    annotations = []
    for label in np.unique(labels):
        if label == 0 or (label == IGNORE_INDEX and ignore_category is None):
            continue
        region = labels == label
        rle = mask_utils.encode(np.asfortranarray(region, dtype=np.uint8))
        crowd = label == IGNORE_INDEX
        annotations.append({
            "category_id": int(ignore_category if crowd else label),
            "segmentation": region_segmentation(region),
            "area": float(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": int(crowd),
        })
    return annotations


# the 8 neighbours clockwise on screen (y down), from the east: (dx, dy)
AROUND = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


def pixel_outline(piece: np.ndarray) -> list[tuple[int, int]]:
    """The outline of one 8-connected (H, W) bool piece through the centres of its edge pixels, (x, y),
    from its top-left pixel (down its left side first), only where it turns (Moore-neighbour tracing,
    neighbours searched clockwise on screen, stopped when the first step repeats). A piece one pixel wide
    is walked there and back; one point for a single pixel."""
    height, width = piece.shape

    def inside(x: int, y: int) -> bool:
        return 0 <= x < width and 0 <= y < height and bool(piece[y, x])

    ys, xs = np.nonzero(piece)
    start = (int(xs[0]), int(ys[0]))  # row-major first: its west neighbour is outside
    outline, current, back = [start], start, (start[0] - 1, start[1])
    first_step = None
    while True:
        k = AROUND.index((back[0] - current[0], back[1] - current[1]))
        for i in range(1, 9):
            dx, dy = AROUND[(k + i) % 8]
            if inside(current[0] + dx, current[1] + dy):
                px, py = AROUND[(k + i - 1) % 8]
                back = (current[0] + px, current[1] + py)
                step = (current, (current[0] + dx, current[1] + dy))
                break
        else:
            return outline  # a single pixel
        if step == first_step:
            break
        first_step = first_step or step
        current = step[1]
        outline.append(current)
    outline.pop()  # the start, reached again
    return [p for i, p in enumerate(outline) if not straight(outline[i - 1], p, outline[(i + 1) % len(outline)])]


def mask_shape(label: str, piece: np.ndarray) -> dict[str, Any]:
    """A labelme ``mask`` shape of a (H, W) bool piece: its inclusive bounding box and the crop as a
    base64 PNG."""
    ys, xs = np.nonzero(piece)
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    buffer = io.BytesIO()
    Image.fromarray(piece[y1:y2 + 1, x1:x2 + 1].astype(np.uint8) * 255).convert("1").save(buffer, format="PNG")
    return {"label": label, "points": [[x1, y1], [x2, y2]], "group_id": None, "description": "",
            "shape_type": "mask", "flags": {}, "mask": base64.b64encode(buffer.getvalue()).decode("ascii")}


def labelme_shapes(labels: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The labelme shapes of an (H, W) label map: per class (then ignore), per 8-connected piece, a
    polygon through its edge pixels' centres where labelme draws it back to exactly the piece, else a
    mask shape. Background gives none."""
    shapes = []
    for label in np.unique(labels):
        if label == 0:
            continue
        name = IGNORE_LABEL if label == IGNORE_INDEX else class_names[int(label)]
        pieces, count = ndimage.label(labels == label, structure=EIGHT)
        for number in range(1, count + 1):
            piece = pieces == number
            outline = pixel_outline(piece)
            if len(outline) >= 3 and np.array_equal(shape_pixels("polygon", outline, piece.shape), piece):
                shapes.append({"label": name, "points": [[float(x), float(y)] for x, y in outline], "group_id": None,
                               "description": "", "shape_type": "polygon", "flags": {}, "mask": None})
            else:
                shapes.append(mask_shape(name, piece))
    return shapes


def coco_instances(masks: Sequence[PseudoMask], class_names: Sequence[str]) -> dict[str, Any]:
    """The COCO instances document of ``masks`` (see the module docstring): image ids 1..N in order,
    annotation ids 1..M, categories 1..C named from ``class_names`` (background first, left out)."""
    images, annotations = [], []
    ignore_category = len(class_names)  # after the classes: 1..C-1 are theirs
    for image_id, item in enumerate(masks, start=1):
        labels = read_labels(item.mask, len(class_names) - 1)
        height, width = labels.shape
        images.append({"id": image_id, "file_name": item.image.name, "width": int(width), "height": int(height)})
        for region in class_regions(labels, ignore_category):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **region})
    categories = [{"id": label, "name": name, "supercategory": name}
                  for label, name in enumerate(class_names) if label > 0]
    if any(a["iscrowd"] for a in annotations):
        categories.append({"id": ignore_category, "name": IGNORE_LABEL, "supercategory": IGNORE_LABEL})
    return {"info": {"description": "rpnet pseudo masks"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": categories}


def export_png(masks: Sequence[PseudoMask], class_names: Sequence[str], out: Path) -> Path:
    """``out/masks/<image stem>.png`` for each mask and ``out/classes.txt``; returns ``out``."""
    for item in masks:
        save_mask(out / MASK_FOLDER / f"{item.image.stem}.png", read_labels(item.mask, len(class_names) - 1))
    atomic_write_text(out / CLASSES_FILE, "".join(f"{name}\n" for name in class_names))
    return out


def export_labelme(masks: Sequence[PseudoMask], class_names: Sequence[str], out: Path) -> Path:
    """``out/<image stem>.json`` per mask, labelme's format (:func:`labelme_shapes`); returns ``out``."""
    for item in masks:
        labels = read_labels(item.mask, len(class_names) - 1)
        height, width = labels.shape
        record = {"version": LABELME_VERSION, "flags": {}, "shapes": labelme_shapes(labels, class_names),
                  "imagePath": os.path.relpath(item.image.resolve(), out.resolve()), "imageData": None,
                  "imageHeight": int(height), "imageWidth": int(width)}
        write_json(out / f"{item.image.stem}.json", record)
    return out


def export_cvat(masks: Sequence[PseudoMask], class_names: Sequence[str], out: Path) -> Path:
    """CVAT's "Segmentation mask 1.1" layout in ``out`` (see the module docstring); returns ``out``."""
    from .viz import colorize

    ignored = False
    for item in masks:
        labels = read_labels(item.mask, len(class_names) - 1)
        ignored |= bool((labels == IGNORE_INDEX).any())
        with atomic_path(out / CVAT_MASKS / f"{item.image.stem}.png") as tmp:
            Image.fromarray(colorize(labels)).save(tmp, format="PNG")
    named = [*enumerate(class_names), *([(IGNORE_INDEX, IGNORE_LABEL)] if ignored else [])]
    colours = colorize(np.array([label for label, _ in named]))  # the VOC colours, those of the masks
    lines = [f"{name}:{','.join(str(int(c)) for c in colour)}::" for (_, name), colour in zip(named, colours)]
    atomic_write_text(out / CVAT_LABELMAP, "# label:color_rgb:parts:actions\n" + "".join(f"{line}\n" for line in lines))
    atomic_write_text(out / CVAT_LIST, "".join(f"{item.image.stem}\n" for item in masks))
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
    if fmt == "coco":
        written = write_json(out / COCO_FILE, coco_instances(masks, class_names))
    else:
        written = {"png": export_png, "labelme": export_labelme, "cvat": export_cvat}[fmt](masks, class_names, out)
    return written, len(masks), missing


__all__ = ["FORMATS", "PseudoMask", "run_config", "pseudo_masks", "read_labels", "edge_loops", "region_segmentation",
           "class_regions", "coco_instances", "pixel_outline", "labelme_shapes", "export_png", "export_labelme",
           "export_cvat", "export_masks"]
