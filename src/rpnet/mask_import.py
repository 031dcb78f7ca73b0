"""``rpnet import-masks SRC --format labelme|coco|cvat --out DIR``: masks drawn in a labelling tool, into a dataset.

A handful of images outlined by hand (ten take about an hour) is what a calibration split needs
(``data.calibration_split``, docs/calibration.md). Labelling tools save outlines, not label maps;
this turns them into what the ``folder`` layout reads: ``DIR/masks/<image stem>.png`` (class index
per pixel, 0 background, k for the k-th line of the class list, 255 "not sure"; VOC palette) and,
with ``--split NAME``, ``DIR/NAME.txt`` listing the images. ``DIR`` is the dataset's folder: the
images must be in ``DIR/images/``.

- ``labelme``: SRC is a folder of labelme JSON files (one per image, as labelme saves them), or one
  such file. The image is the file named by ``imagePath`` (its name looked up in ``DIR/images/``),
  else the one with the JSON file's stem. Shapes ``polygon``, ``rectangle`` and ``circle`` are
  drawn as labelme draws them (PIL, outline included), ``mask`` shapes (labelme 5.3 and later: an
  inclusive bounding box and a base64 PNG) placed in their box; a shape labelled ``_background_``
  (or ``background``) draws background, one labelled ``__ignore__`` draws 255 over everything else.
- ``coco``: SRC is a COCO instances file (CVAT's "COCO 1.0", Label Studio's COCO export). Each image
  of it is matched by its file name; its annotations' polygons or RLEs are drawn by their category's
  name; ``iscrowd`` regions are 255, as rpnet's COCO reader paints them. An image without
  annotations is all background.
- ``cvat``: SRC is CVAT's "Segmentation mask 1.1" export, unzipped: ``labelmap.txt`` (``name:r,g,b:...``)
  and ``SegmentationClass/<image stem>.png`` (colour masks), each image matched by its stem. Each
  colour is the label the map gives it; a colour the map lacks is a problem named with its pixels.

Nothing is written until every file has been read and checked, and the problems are reported all
at once, by name: a label not in the class list, an image that is not in ``DIR/images/`` or whose
size differs from the one the tool recorded, a shape that is not an area, and two shapes of
different classes that overlap (which class owns those pixels is then a guess: fix the outline).
A mask or split file that already exists with other contents is refused unless ``overwrite``.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .data.coco import instance_mask
from .data.folder import IMAGE_SUFFIXES, MASK_SUFFIX
from .data.images import BACKGROUND_NAMES, read_class_list
from .errors import DataError
from .io import IGNORE_INDEX, atomic_write_text, load_mask, save_mask

FORMATS = ("labelme", "coco", "cvat")
IGNORE_LABEL = "__ignore__"  # labelme's (labelme2voc's) name for "not sure"; rpnet export-masks writes it too
CVAT_LABELMAP = "labelmap.txt"  # CVAT's "Segmentation mask 1.1": the label map, and the folder of colour masks
CVAT_MASKS = "SegmentationClass"
AREA_SHAPES = ("polygon", "rectangle", "circle")
MAX_REPORTED = 20  # problems listed in the error


@dataclass(frozen=True)
class Region:
    """One drawn shape: its label (class index, or 255 for ignore), its pixels and what to call it in a message."""

    label: int
    pixels: np.ndarray  # (H, W) bool
    name: str


@dataclass(frozen=True)
class ImportedMask:
    """One image's mask, ready to write: the image file in ``DIR/images/`` and its (H, W) uint8 labels."""

    image: Path
    labels: np.ndarray


def class_index(class_names: Sequence[str]) -> dict[str, int]:
    """Label name -> mask value: the class list's position (background 0, under any of its usual names),
    and :data:`IGNORE_LABEL` -> 255."""
    index = {name: i for i, name in enumerate(class_names)}
    index.update({name: 0 for name in BACKGROUND_NAMES})
    index[IGNORE_LABEL] = IGNORE_INDEX
    return index


def shape_pixels(shape_type: str, points: Sequence[Sequence[float]], size: tuple[int, int]) -> np.ndarray:
    """The (H, W) bool pixels of one labelme shape, drawn as labelme's ``shape_to_mask`` draws it (PIL,
    outline and fill): a polygon (>= 3 points), a rectangle (two corners) or a circle (the centre and a
    point on it). A ValueError for another shape or the wrong number of points."""
    height, width = size
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    xy = [(float(x), float(y)) for x, y in points]
    if shape_type == "polygon" and len(xy) >= 3:
        draw.polygon(xy, outline=1, fill=1)
    elif shape_type == "rectangle" and len(xy) == 2:
        (x0, y0), (x1, y1) = xy
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif shape_type == "circle" and len(xy) == 2:
        (cx, cy), (px, py) = xy
        r = float(np.hypot(px - cx, py - cy))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    else:
        raise ValueError(f"a {shape_type!r} with {len(xy)} points is not an area (polygon, rectangle, circle)")
    return np.asarray(canvas, dtype=bool)


def mask_shape_pixels(points: Sequence[Sequence[float]], data: str, size: tuple[int, int]) -> np.ndarray:
    """The (H, W) bool pixels of a labelme ``mask`` shape: ``data`` (a base64 PNG, nonzero = in) placed with
    its top-left pixel at ``points[0]``, filling the box to ``points[1]`` inclusive, as labelme does. A
    ValueError when the PNG does not fit its box or the box the image."""
    if len(points) != 2:
        raise ValueError(f"a 'mask' needs its box's two corners, got {len(points)} points")
    (x1, y1), (x2, y2) = ((int(round(float(x))), int(round(float(y)))) for x, y in points)
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as img:
            crop = np.asarray(img.convert("L")) > 0
    except (ValueError, OSError) as exc:
        raise ValueError(f"its 'mask' is not a base64 PNG ({exc})") from None
    height, width = size
    if crop.shape != (y2 - y1 + 1, x2 - x1 + 1) or x1 < 0 or y1 < 0 or x2 >= width or y2 >= height:
        raise ValueError(f"its {crop.shape[1]}x{crop.shape[0]} mask does not fit the box {x1},{y1}-{x2},{y2} in a "
                         f"{width}x{height} image")
    pixels = np.zeros(size, dtype=bool)
    pixels[y1:y2 + 1, x1:x2 + 1] = crop
    return pixels


def paint(regions: Sequence[Region], size: tuple[int, int], where: str) -> tuple[np.ndarray, list[str]]:
    """The (H, W) uint8 label map of an image's regions, and the problems found: every pair of regions of
    different classes that share pixels (background and ignore regions may overlap anything). Classes are
    painted first, then background regions, then ignore regions over everything."""
    labels = np.zeros(size, dtype=np.uint8)
    problems = []
    objects = [r for r in regions if r.label not in (0, IGNORE_INDEX)]
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            shared = int(np.count_nonzero(a.pixels & b.pixels))
            if a.label != b.label and shared:
                problems.append(f"{where}: {a.name} and {b.name} overlap on {shared} pixels")
    for region in sorted(regions, key=lambda r: (r.label == IGNORE_INDEX, r.label == 0)):
        labels[region.pixels] = region.label
    return labels, problems


def image_files(image_dir: Path) -> dict[str, Path]:
    """File name -> path, and stem -> path, of the images in ``image_dir``."""
    if not image_dir.is_dir():
        raise DataError(f"image folder not found: {image_dir} (--out is the dataset folder, with images/ in it)")
    files = [p for p in sorted(image_dir.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return {**{p.stem: p for p in files}, **{p.name: p for p in files}}


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, from its header."""
    with Image.open(path) as img:
        return img.height, img.width


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def labelme_files(src: Path) -> list[Path]:
    """SRC's labelme files: SRC itself, or every ``*.json`` in the folder SRC."""
    if src.is_file():
        return [src]
    if src.is_dir():
        files = sorted(src.glob("*.json"))
        if files:
            return files
        raise DataError(f"no labelme .json files in {src}")
    raise DataError(f"{src} is neither a labelme .json file nor a folder of them")


def read_labelme(src: Path, images: dict[str, Path], index: dict[str, int]) -> tuple[list[ImportedMask], list[str]]:
    """The masks of a folder of labelme files and the problems found in them (nothing written)."""
    masks, problems = [], []
    for path in labelme_files(src):
        record = read_json_file(path)
        if not isinstance(record, dict) or not isinstance(record.get("shapes"), list):
            problems.append(f"{path}: not a labelme file (no 'shapes' list)")
            continue
        named = Path(str(record.get("imagePath") or "")).name
        image = images.get(named) or images.get(path.stem)
        if image is None:
            problems.append(f"{path}: image {named or path.stem!r} is not in the dataset's images/")
            continue
        size = image_size(image)
        recorded = (record.get("imageHeight"), record.get("imageWidth"))
        if None not in recorded and tuple(int(v) for v in recorded) != size:
            problems.append(f"{path}: labelled at {recorded[1]}x{recorded[0]} but {image.name} is {size[1]}x{size[0]}")
            continue
        regions = []
        for number, shape in enumerate(record["shapes"], start=1):
            label = str(shape.get("label", "")).strip()
            name = f"shape {number} ({label!r})"
            if label not in index:
                problems.append(f"{path}: {name}: label {label!r} is not in the class list")
                continue
            kind = str(shape.get("shape_type") or "polygon")
            try:
                pixels = (mask_shape_pixels(shape.get("points") or [], str(shape.get("mask") or ""), size)
                          if kind == "mask" else shape_pixels(kind, shape.get("points") or [], size))
            except (ValueError, TypeError) as exc:
                problems.append(f"{path}: {name}: {exc}")
                continue
            regions.append(Region(index[label], pixels, name))
        labels, overlaps = paint(regions, size, str(path))
        problems += overlaps
        masks.append(ImportedMask(image, labels))
    return masks, problems


def read_coco(src: Path, images: dict[str, Path], index: dict[str, int]) -> tuple[list[ImportedMask], list[str]]:
    """The masks of a COCO instances file and the problems found in it (nothing written)."""
    content = read_json_file(src)
    if not isinstance(content, dict) or not all(isinstance(content.get(k), list) for k in ("images", "categories")):
        raise DataError(f"{src}: not a COCO instances file (no 'images' and 'categories' lists)")
    problems = []
    names = {c.get("id"): str(c.get("name", "")).strip() for c in content["categories"]}
    unknown = sorted({n for n in names.values() if n not in index})
    if unknown:
        problems.append(f"{src}: categories {unknown} are not in the class list")
    by_image: dict[Any, list[dict]] = {}
    for ann in content.get("annotations") or []:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    masks = []
    for info in content["images"]:
        file_name = Path(str(info.get("file_name", ""))).name
        image = images.get(file_name) or images.get(Path(file_name).stem)
        if image is None:
            problems.append(f"{src}: image {file_name!r} is not in the dataset's images/")
            continue
        size = image_size(image)
        if (info.get("height"), info.get("width")) != size:
            problems.append(f"{src}: {file_name} is {info.get('width')}x{info.get('height')} there but "
                            f"{size[1]}x{size[0]} in images/")
            continue
        regions = []
        for ann in by_image.get(info.get("id"), []):
            category = names.get(ann.get("category_id"))
            if category not in index:
                if category is None:
                    problems.append(f"{src}: annotation {ann.get('id')} has an unknown category_id")
                continue
            crowd = bool(ann.get("iscrowd", 0))
            try:
                pixels = instance_mask(ann.get("segmentation") or [], *size).astype(bool)
            except (TypeError, ValueError, KeyError) as exc:
                problems.append(f"{src}: annotation {ann.get('id')} of {file_name}: unreadable segmentation ({exc})")
                continue
            regions.append(Region(IGNORE_INDEX if crowd else index[category], pixels,
                                  f"annotation {ann.get('id')} ({category!r}{', crowd' if crowd else ''})"))
        labels, overlaps = paint(regions, size, f"{src}: {file_name}")
        problems += overlaps
        masks.append(ImportedMask(image, labels))
    return masks, problems


def read_labelmap(path: Path, index: dict[str, int]) -> tuple[dict[tuple[int, int, int], int], list[str]]:
    """CVAT's ``labelmap.txt``: RGB colour -> mask value (through the class list ``index``), and the problems."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    colours, problems = {}, []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            colour = tuple(int(c) for c in rest.split(":")[0].split(","))
            assert len(colour) == 3
        except (ValueError, AssertionError):
            problems.append(f"{path}: line {number}: {line!r} is not 'name:r,g,b:...'")
            continue
        if name.strip() not in index:
            problems.append(f"{path}: line {number}: label {name.strip()!r} is not in the class list")
            continue
        colours[colour] = index[name.strip()]
    return colours, problems


def read_cvat(src: Path, images: dict[str, Path], index: dict[str, int]) -> tuple[list[ImportedMask], list[str]]:
    """The masks of a CVAT "Segmentation mask 1.1" export and the problems found in it (nothing written)."""
    labelmap, folder = src / CVAT_LABELMAP, src / CVAT_MASKS
    if not labelmap.is_file() or not folder.is_dir():
        raise DataError(f"{src}: not a CVAT 'Segmentation mask 1.1' export (labelmap.txt and SegmentationClass/)")
    colours, problems = read_labelmap(labelmap, index)
    masks = []
    for path in sorted(folder.glob("*.png")):
        image = images.get(path.stem)
        if image is None:
            problems.append(f"{path}: image {path.stem!r} is not in the dataset's images/")
            continue
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
        except OSError as exc:
            problems.append(f"{path}: unreadable ({exc})")
            continue
        if rgb.shape[:2] != image_size(image):
            problems.append(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} but {image.name} is "
                            f"{image_size(image)[1]}x{image_size(image)[0]}")
            continue
        codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        found, inverse = np.unique(codes, return_inverse=True)
        values = np.zeros(len(found), dtype=np.uint8)
        for i, code in enumerate(found.tolist()):
            colour = (code >> 16, (code >> 8) & 255, code & 255)
            if colour not in colours:
                problems.append(f"{path}: colour {colour} ({int(np.count_nonzero(inverse == i))} pixels) is not in "
                                f"{labelmap.name}")
                continue
            values[i] = colours[colour]
        masks.append(ImportedMask(image, values[inverse].reshape(codes.shape)))
    return masks, problems


def planned_writes(masks: Iterable[ImportedMask], out: Path, split: str | None) -> tuple[dict[Path, Any], list[str]]:
    """{path: labels or text} of what an import writes, and the paths that exist with other contents."""
    writes: dict[Path, Any] = {}
    for item in masks:
        writes[out / "masks" / f"{item.image.stem}{MASK_SUFFIX}"] = item.labels
    if split is not None:
        writes[out / f"{split}.txt"] = "".join(f"{item.image.name}\n" for item in masks)
    clashes = []
    for path, content in writes.items():
        if not path.exists():
            continue
        same = (path.read_text(encoding="utf-8") == content if isinstance(content, str)
                else np.array_equal(load_mask(path), content))
        if not same:
            clashes.append(str(path))
    return writes, clashes


def import_masks(src: str | Path, fmt: str, out: str | Path, classes: str | Path | None = None,
                 split: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Import the masks of ``src`` (``fmt``: :data:`FORMATS`) into the folder dataset ``out``.

    ``classes``: the class list (background first); default ``out/classes.txt``, and where both exist
    they must be the same list. Returns ``{"masks": N, "written": [...], "unchanged": [...],
    "split": path or None}``. Raises :class:`DataError` listing every problem, before anything is written.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown mask format {fmt!r}; choose from {list(FORMATS)}")
    src, out = Path(src), Path(out)
    own_classes = out / "classes.txt"
    class_file = Path(classes) if classes is not None else own_classes
    class_names = read_class_list(class_file)
    if own_classes.is_file() and class_file != own_classes and read_class_list(own_classes) != class_names:
        raise DataError(f"{class_file} and the dataset's {own_classes} list different classes: the masks' values "
                        "would mean other classes there")
    images = image_files(out / "images")
    index = class_index(class_names)
    reader = {"labelme": read_labelme, "coco": read_coco, "cvat": read_cvat}[fmt]
    masks, problems = reader(src, images, index)
    stems = [m.image.stem for m in masks]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    problems += [f"{src}: image {s!r} is outlined more than once" for s in twice]
    if not masks and not problems:
        problems.append(f"{src}: no image to import")
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{len(problems)} problem(s), nothing written:\n  {shown}{more}")
    writes, clashes = planned_writes(masks, out, split)
    if clashes and not overwrite:
        raise DataError(f"{len(clashes)} file(s) exist with other contents, nothing written (--overwrite replaces "
                        f"them): {', '.join(clashes[:MAX_REPORTED])}")
    written, unchanged = [], []
    for path, content in writes.items():
        if str(path) not in clashes and path.exists():
            unchanged.append(path)
        elif isinstance(content, str):
            written.append(atomic_write_text(path, content))
        else:
            written.append(save_mask(path, content))
    if not own_classes.is_file():
        written.append(atomic_write_text(own_classes, "".join(f"{name}\n" for name in class_names)))
    return {"masks": len(masks), "written": written, "unchanged": unchanged,
            "split": out / f"{split}.txt" if split is not None else None}


__all__ = ["FORMATS", "IGNORE_LABEL", "Region", "ImportedMask", "class_index", "shape_pixels", "paint",
           "mask_shape_pixels", "read_labelme", "read_coco", "read_labelmap", "read_cvat", "import_masks"]
