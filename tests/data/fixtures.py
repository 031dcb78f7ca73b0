"""Tiny datasets written into a test's tmp_path, one helper per layout.

Every helper returns what it wrote (ids, tags, masks) so that tests compare the
loaders' output with values fixed here by hand, not with the loaders themselves.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import scipy.io
from pycocotools import mask as mask_utils

from rpnet.io import save_image, save_mask

SIZE = 16  # every fixture image is SIZE x SIZE


def solid_image(value: int, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8, one grey level (so JPEG round trips stay close)."""
    return np.full((size, size, 3), value, dtype=np.uint8)


def block_mask(label: int, size: int = SIZE, extra: dict[int, tuple[slice, slice]] | None = None) -> np.ndarray:
    """Background with a centre block of ``label`` (rows/cols 4..11) and optional other regions."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[4:12, 4:12] = label
    for value, (rows, cols) in (extra or {}).items():
        mask[rows, cols] = value
    return mask


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def write_voc_xml(path: Path, objects: list[str], difficult: tuple[str, ...] = (), parts: bool = False) -> Path:
    """A VOC annotation with one <object> per name; ``difficult`` names get <difficult>1</difficult>."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = path.stem + ".jpg"
    for name in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "1" if name in difficult else "0"
        if parts:  # VOC person layout: nested <part><name> must not become tags
            part = ET.SubElement(obj, "part")
            ET.SubElement(part, "name").text = "head"
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path)
    return path


def write_sbd_mat(path: Path, mask: np.ndarray) -> Path:
    """An SBD ``cls/<id>.mat``: struct GTcls with Segmentation (and CategoriesPresent as SBD has)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.array([v for v in np.unique(mask) if v not in (0, 255)], dtype=np.uint8)
    scipy.io.savemat(str(path), {"GTcls": {"Segmentation": mask, "CategoriesPresent": present}})
    return path


# --------------------------------------------------------------------------- VOC + SBD

# Split membership, chosen so that train_aug = VOC train + SBD train + SBD val - VOC val
# can be counted by hand:
#   VOC train {a1, a2, a3}   VOC val {v1, v2}   SBD train {a2, v2, s1}   SBD val {s2, a1, s3}
#   union {a1, a2, a3, v2, s1, s2, s3} minus {v1, v2} -> a1 a2 a3 s1 s2 s3 (6 ids)
VOC_TRAIN = ["a1", "a2", "a3"]
VOC_VAL = ["v1", "v2"]
SBD_TRAIN = ["a2", "v2", "s1"]
SBD_VAL = ["s2", "a1", "s3"]
TRAIN_AUG_BY_HAND = ["a1", "a2", "a3", "s1", "s2", "s3"]

# Objects named in each XML (VOC names) and the tags they give (VOC_CLASSES index - 1).
VOC_OBJECTS = {
    "a1": ["dog", "person", "dog"],  # a repeated object is one tag
    "a2": ["cat"],
    "a3": ["aeroplane", "bottle"],  # bottle is marked difficult: it still counts
    "v1": ["person"],
    "v2": ["tvmonitor"],
    "s1": ["horse"],
}
VOC_TAGS = {"a1": (11, 14), "a2": (7,), "a3": (0, 4), "v1": (14,), "v2": (19,), "s1": (12,)}
# Masks: VOC ids in SegmentationClass; s1 in SegmentationClassAug and as a .mat (the PNG
# wins); s2 and s3 only as .mat, and have no XML, so their tags come from the mask.
VOC_MASKS = {
    "a1": block_mask(12, extra={15: (slice(0, 2), slice(0, 16)), 255: (slice(3, 4), slice(0, 16))}),
    "a2": block_mask(8),
    "a3": block_mask(1, extra={5: (slice(13, 16), slice(0, 3))}),
    "v1": block_mask(15),
    "v2": block_mask(20),
}
AUG_MASKS = {"s1": block_mask(13)}
SBD_MASKS = {
    "s1": block_mask(3),  # must lose against SegmentationClassAug
    "s2": block_mask(17, extra={2: (slice(0, 3), slice(0, 3))}),
    "s3": block_mask(6),
}
SBD_TAGS = {"s2": (1, 16), "s3": (5,)}
VOC_JPEG = ["a1", "a2", "a3", "v1", "v2", "s1"]  # s2, s3 only in SBD's img/


def make_voc(root: Path) -> Path:
    """A VOC 2012 tree under ``root`` (train, val splits) as described above."""
    for image_id in VOC_JPEG:
        save_image(root / "JPEGImages" / f"{image_id}.jpg", solid_image(100))
    for image_id, objects in VOC_OBJECTS.items():
        write_voc_xml(root / "Annotations" / f"{image_id}.xml", objects, difficult=("bottle",), parts=True)
    for image_id, mask in VOC_MASKS.items():
        save_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
    for image_id, mask in AUG_MASKS.items():
        save_mask(root / "SegmentationClassAug" / f"{image_id}.png", mask)
    write_lines(root / "ImageSets" / "Segmentation" / "train.txt", VOC_TRAIN)
    write_lines(root / "ImageSets" / "Segmentation" / "val.txt", VOC_VAL)
    return root


def make_sbd(root: Path) -> Path:
    """An SBD ``dataset`` folder: img/ for the ids VOC lacks, cls/*.mat, train.txt, val.txt."""
    for image_id in ("s2", "s3"):
        save_image(root / "img" / f"{image_id}.jpg", solid_image(50))
    for image_id, mask in SBD_MASKS.items():
        write_sbd_mat(root / "cls" / f"{image_id}.mat", mask)
    write_lines(root / "train.txt", SBD_TRAIN)
    write_lines(root / "val.txt", SBD_VAL)
    return root


# --------------------------------------------------------------------------- COCO

# Non-contiguous category ids, listed out of order in the JSON: sorted by id they map
# to labels person (1) -> 1, dog (18) -> 2, toothbrush (90) -> 3.
COCO_CATEGORIES = [
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
    {"id": 1, "name": "person", "supercategory": "person"},
]
COCO_CLASS_NAMES = ["background", "person", "dog", "toothbrush"]
COCO_FILES = {42: "COCO_val2014_000000000042.jpg", 7: "COCO_val2014_000000000007.jpg"}


def coco_instances() -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The annotations of image 42 and two exact binary regions used in them.

    - a compressed-RLE toothbrush, rows/cols 2..5 (16 px), listed first;
    - a polygon dog, the square x, y in [0, 12] (about 144 px), listed second, so
      painting in annotation order would hide the toothbrush, largest-first does not;
    - an uncompressed-RLE crowd of people, rows 10..15, all columns (iscrowd 1).
    """
    toothbrush = np.zeros((SIZE, SIZE), dtype=np.uint8)
    toothbrush[2:6, 2:6] = 1
    crowd = np.zeros((SIZE, SIZE), dtype=np.uint8)
    crowd[10:16, :] = 1
    rle = mask_utils.encode(np.asfortranarray(toothbrush))
    rle["counts"] = rle["counts"].decode("ascii")  # JSON holds the compressed string
    anns = [
        {"id": 1, "image_id": 42, "category_id": 90, "segmentation": rle, "area": 16.0,
         "bbox": [2, 2, 4, 4], "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 18, "segmentation": [[0, 0, 12, 0, 12, 12, 0, 12]],
         "area": 144.0, "bbox": [0, 0, 12, 12], "iscrowd": 0},
        {"id": 3, "image_id": 42, "category_id": 1, "segmentation": _uncompressed_rle(crowd),
         "area": 96.0, "bbox": [0, 10, 16, 6], "iscrowd": 1},
    ]
    return anns, toothbrush, crowd


def _uncompressed_rle(binary: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = binary.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"counts": [int(c) for c in counts], "size": list(binary.shape)}


def make_coco(root: Path, split: str = "val2014", extra_annotations: list[dict] | None = None) -> Path:
    """COCO layout with images 42 (toothbrush RLE, dog polygon, crowd) and 7 (no annotations)."""
    anns, _, _ = coco_instances()
    images = []
    for coco_id, name in COCO_FILES.items():
        save_image(root / split / name, solid_image(80))
        images.append({"id": coco_id, "file_name": name, "height": SIZE, "width": SIZE})
    content = {
        "images": images,
        "annotations": anns + list(extra_annotations or []),
        "categories": COCO_CATEGORIES,
    }
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return root


# --------------------------------------------------------------------------- plain folder

FOLDER_CLASSES = ["background", "cat", "dog", "person"]


def make_folder(root: Path, tags_format: str = "csv") -> Path:
    """images/{a.jpg, b.png, c.jpeg, d.png}, tags (csv or json), classes.txt, masks/a.png, train.txt.

    Tags: a = dog person (spaces), b = cat;dog (semicolon), c = none, d not listed.
    train.txt lists ``a.jpg`` and ``d`` (a stem).
    """
    for name, value in (("a.jpg", 10), ("b.png", 20), ("c.jpeg", 30), ("d.png", 40)):
        save_image(root / "images" / name, solid_image(value))
    write_lines(root / "classes.txt", ["# background first", *FOLDER_CLASSES[:2], "", *FOLDER_CLASSES[2:]])
    save_mask(root / "masks" / "a.png", block_mask(2, extra={3: (slice(0, 2), slice(0, 2))}))
    if tags_format == "csv":
        write_lines(root / "tags.csv", ["image,tags", "a.jpg,dog person", "b.png,cat;dog", "c.jpeg,"])
    else:
        (root / "tags.json").write_text(json.dumps({"a.jpg": ["dog", "person"], "b.png": ["cat", "dog"], "c.jpeg": []}))
    write_lines(root / "train.txt", ["a.jpg", "d"])
    return root
