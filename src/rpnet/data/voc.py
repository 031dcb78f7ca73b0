"""PASCAL VOC 2012, and its 10,582-image ``train_aug`` split with masks from SBD.

Layout under ``root`` (the ``VOC2012`` folder)::

    JPEGImages/<id>.jpg
    Annotations/<id>.xml                     tags: every <object><name>, difficult ones too
    SegmentationClass/<id>.png               palette PNG masks (255 on object borders)
    SegmentationClassAug/<id>.png            optional: SBD masks already converted to PNG
    ImageSets/Segmentation/<split>.txt       one id per line
    classes.txt                              optional class list (else VOC_CLASSES)

SBD (``sbd_root``, the ``dataset`` folder of the SBD release)::

    img/<id>.jpg    cls/<id>.mat (struct GTcls with field Segmentation)    train.txt val.txt

``train_aug`` = VOC train + SBD train + SBD val - VOC val (sorted, no duplicates). A
mask is taken from SegmentationClass, else SegmentationClassAug, else the SBD .mat.
The .mat files are read where they lie by :func:`voc_mask_loader` rather than
converted into a cache: nothing is written next to the user's data or has to be
kept in step with it, and one small ``loadmat`` per image costs about a millisecond.
An explicit ``ImageSets/Segmentation/train_aug.txt`` is used as it stands when no
``sbd_root`` is given (the common pre-converted layout, with SegmentationClassAug).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import scipy.io

from ..errors import DataError
from ..io import IGNORE_INDEX
from .dataset import ImageRecord, read_mask_file
from .images import did_you_mean, read_class_list, safe_join

VOC_CLASSES = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
TRAIN_AUG = "train_aug"
IMAGE_SUFFIX = ".jpg"
SBD_STRUCT = "GTcls"  # SBD's class-segmentation .mat holds a struct of this name
SBD_FIELD = "Segmentation"
SPLIT_FOLDER = Path("ImageSets") / "Segmentation"
MASK_FOLDERS = ("SegmentationClass", "SegmentationClassAug")  # in order of preference


def load_voc(
    root: str | Path,
    split: str,
    classes: str | Path | None = None,
    sbd_root: str | Path | None = None,
) -> tuple[list[ImageRecord], list[str]]:
    """Records of one VOC split and the class list (background first).

    ``classes``: a class-list file; else ``root/classes.txt`` when present; else
    :data:`VOC_CLASSES`. ``split`` names ``ImageSets/Segmentation/<split>.txt``, or is
    ``"train_aug"``, derived from SBD (``sbd_root`` required unless that file exists).
    Raises :class:`DataError` naming the file for a missing split file, an id without
    an image, an unreadable XML, or a tag that is not in the class list.
    """
    root = Path(root)
    class_names = _class_names(root, classes)
    index = {name: i for i, name in enumerate(class_names)}
    sbd = Path(sbd_root) if sbd_root is not None else None
    split_file = root / SPLIT_FOLDER / f"{split}.txt"
    if split == TRAIN_AUG and (sbd is not None or not split_file.is_file()):
        if sbd is None:
            raise DataError(
                f"split {TRAIN_AUG!r} is VOC train + SBD train/val - VOC val: set data.sbd_root to the "
                f"SBD folder (with cls/ train.txt val.txt), or provide {split_file}"
            )
        ids = train_aug_ids(root, sbd)
        source = f"{TRAIN_AUG} (from {root} and {sbd})"
    else:
        ids = read_split(split_file)
        source = str(split_file)
    records = []
    for image_id in ids:
        image = _find_image(root, sbd, image_id, source)
        mask = _find_mask(root, sbd, image_id)
        tags = _tags(root, image_id, mask, index)
        records.append(ImageRecord(id=image_id, image=image, tags=tags, mask=mask))
    return records, class_names


def read_split(path: str | Path) -> list[str]:
    """Ids listed in a split file, one per line (only the first word of a line counts)."""
    path = Path(path)
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        raise DataError(f"split file not found: {path} (splits there: {available or 'none'})")
    ids: list[str] = []
    seen: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8") from None
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        if words[0] in seen:
            raise DataError(f"{path}: id {words[0]!r} is listed twice (again on line {number})")
        seen.add(words[0])
        ids.append(words[0])
    return ids


def train_aug_ids(root: str | Path, sbd_root: str | Path) -> list[str]:
    """VOC train + SBD train + SBD val - VOC val, sorted, without duplicates."""
    voc = Path(root) / SPLIT_FOLDER
    sbd = Path(sbd_root)
    union = set(read_split(voc / "train.txt")) | set(read_split(sbd / "train.txt")) | set(read_split(sbd / "val.txt"))
    return sorted(union - set(read_split(voc / "val.txt")))


def voc_mask_loader(record: ImageRecord) -> np.ndarray | None:
    """Mask loader for VOC records: palette PNGs, or SBD's ``cls/<id>.mat`` files.

    Module-level (not a closure) so that DataLoader workers started by ``spawn`` can
    pickle it. Returns (H, W) uint8 labels, or None for a record without a mask.
    """
    if record.mask is None or Path(record.mask).suffix != ".mat":
        return read_mask_file(record)
    return read_sbd_mask(record.mask)


def read_sbd_mask(path: str | Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD .mat file as (H, W) uint8 labels."""
    path = Path(path)
    try:
        content = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, TypeError, NotImplementedError) as exc:
        raise DataError(f"cannot read SBD mask {path}: {exc}") from None
    struct = content.get(SBD_STRUCT)
    segmentation = getattr(struct, SBD_FIELD, None)
    if segmentation is None:
        raise DataError(f"{path}: no {SBD_STRUCT}.{SBD_FIELD} in this .mat file")
    mask = np.asarray(segmentation)
    if mask.ndim != 2 or mask.size == 0 or mask.min() < 0 or mask.max() > IGNORE_INDEX:
        raise DataError(f"{path}: {SBD_STRUCT}.{SBD_FIELD} is not a 2-D label map in 0..255")
    return mask.astype(np.uint8)


def _class_names(root: Path, classes: str | Path | None) -> list[str]:
    if classes is not None:
        return read_class_list(classes)
    if (root / "classes.txt").is_file():
        return read_class_list(root / "classes.txt")
    return list(VOC_CLASSES)


def _find_image(root: Path, sbd: Path | None, image_id: str, source: str) -> Path:
    candidates = [safe_join(root / "JPEGImages", image_id + IMAGE_SUFFIX)]
    if sbd is not None:
        candidates.append(safe_join(sbd / "img", image_id + IMAGE_SUFFIX))
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(f"{source}: id {image_id!r} has no image (looked for {', '.join(map(str, candidates))})")


def _find_mask(root: Path, sbd: Path | None, image_id: str) -> Path | None:
    for folder in MASK_FOLDERS:
        path = safe_join(root / folder, image_id + ".png")
        if path.is_file():
            return path
    if sbd is not None:
        path = safe_join(sbd / "cls", image_id + ".mat")
        if path.is_file():
            return path
    return None


def _tags(root: Path, image_id: str, mask: Path | None, index: dict[str, int]) -> tuple[int, ...]:
    """Foreground tags from the XML when it exists, else from the mask's labels, else none."""
    xml = safe_join(root / "Annotations", image_id + ".xml")
    if xml.is_file():
        return _tags_from_xml(xml, index)
    if mask is None:
        return ()
    record = ImageRecord(id=image_id, image=Path(), tags=(), mask=mask)
    labels = np.unique(voc_mask_loader(record))
    num_classes = len(index) - 1
    labels = [int(v) for v in labels if v not in (0, IGNORE_INDEX)]
    bad = [v for v in labels if v > num_classes]
    if bad:
        raise DataError(f"{mask}: labels {bad} are not classes (the class list has {num_classes})")
    return tuple(v - 1 for v in labels)


def _tags_from_xml(path: Path, index: dict[str, int]) -> tuple[int, ...]:
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"cannot read annotation {path}: {exc}") from None
    tags: set[int] = set()
    # Only <object><name>: person layouts nest <part><name> (head, hand) inside objects.
    for name in tree.getroot().iterfind("object/name"):
        label = (name.text or "").strip()
        # "background" is index 0, never an object tag.
        if label not in index or index[label] == 0:
            raise DataError(f"{path}: object {label!r} is not in the class list {list(index)[1:]}"
                            f"{did_you_mean([label], list(index)[1:])}")
        tags.add(index[label] - 1)
    return tuple(sorted(tags))


__all__ = ["VOC_CLASSES", "TRAIN_AUG", "load_voc", "read_split", "train_aug_ids", "voc_mask_loader", "read_sbd_mask"]
