"""Any other dataset: a folder of images, a tag list per image and a class list.

Layout under ``root``::

    images/<file>          any image suffix (IMAGE_SUFFIXES); the id is the file stem
    tags.csv               header "image,tags"; tags separated by spaces or ";"
      or tags.json         {"a.jpg": ["dog", "person"], ...}
    classes.txt            background first, one name per line (unless data.classes is set)
    masks/<stem>.png       optional ground truth for evaluation
    <split>.txt            optional: the image files of a split, one per line

Without ``<split>.txt`` a split is every image. Entries in the tags and split files
name a file in ``images/`` (``a.jpg``) or its stem (``a``); they go through
:func:`~rpnet.data.images.safe_join`, so ``../`` cannot reach outside the folder. An
image the tags file does not mention has no tags (it can still be evaluated, and is
left out of training).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

from ..errors import DataError
from .dataset import ImageRecord, warn_once
from .images import did_you_mean, read_class_list, safe_join

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
TAG_SEPARATOR = re.compile(r"[;\s]+")
CSV_COLUMNS = ("image", "tags")
MASK_SUFFIX = ".png"
MAX_PROBLEMS = 20  # rows of a tags file an error lists


def load_folder(
    root: str | Path, split: str, classes: str | Path | None = None, *, note_every_image: bool = True
) -> tuple[list[ImageRecord], list[str]]:
    """Records of one split of a plain folder and the class list (background first). Without
    ``<split>.txt`` the split is every image (a warning says so, unless ``note_every_image`` is off).

    Raises :class:`DataError` naming the file for: no ``images/`` folder, two images
    with the same stem, a tags or split entry that is not an image there (or leaves
    the folder), a tag that is not in the class list, an image listed twice.
    """
    root = Path(root)
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise DataError(f"image folder not found: {image_dir}")
    class_names = read_class_list(classes if classes is not None else root / "classes.txt")
    files = _list_images(image_dir)
    resolve = _EntryResolver(image_dir, files)
    tags = _read_tags(root, resolve, class_names)
    names = _split_names(root, split, resolve, files, note_every_image)
    records = []
    for name in names:
        path = files[name]
        mask = root / "masks" / f"{path.stem}{MASK_SUFFIX}"
        records.append(
            ImageRecord(id=path.stem, image=path, tags=tags.get(name, ()), mask=mask if mask.is_file() else None)
        )
    return records, class_names


def _list_images(image_dir: Path) -> dict[str, Path]:
    """File name -> path of every image in ``image_dir``, sorted by name; stems must be unique."""
    files: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        safe_join(image_dir, path.name)  # refuses a symlink to a file outside the folder
        if path.stem in by_stem:
            raise DataError(f"two images share the id {path.stem!r}: {by_stem[path.stem]} and {path}")
        by_stem[path.stem] = path
        files[path.name] = path
    return files


class _EntryResolver:
    """Maps a tags/split entry (a file name or a stem in ``images/``) to the file name."""

    def __init__(self, image_dir: Path, files: dict[str, Path]) -> None:
        self._image_dir = image_dir
        self._resolved_dir = image_dir.resolve()
        self._files = files
        self._by_stem = {path.stem: name for name, path in files.items()}

    def __call__(self, entry: str, source: Path) -> str:
        path = safe_join(self._image_dir, entry)
        if path.parent.resolve() == self._resolved_dir:
            if path.name in self._files:
                return path.name
            if path.name in self._by_stem:
                return self._by_stem[path.name]
        raise DataError(f"{source}: {entry!r} is not an image in {self._image_dir}")


def _read_tags(root: Path, resolve: _EntryResolver, class_names: list[str]) -> dict[str, tuple[int, ...]]:
    csv_path, json_path = root / "tags.csv", root / "tags.json"
    if csv_path.is_file() and json_path.is_file():
        raise DataError(f"both {csv_path} and {json_path} exist; keep one")
    if csv_path.is_file():
        rows = _read_tags_csv(csv_path)
        source = csv_path
    elif json_path.is_file():
        rows = _read_tags_json(json_path)
        source = json_path
    else:
        raise DataError(f"no tags file: expected {csv_path} or {json_path}")
    index = {name: i for i, name in enumerate(class_names)}
    tags: dict[str, tuple[int, ...]] = {}
    problems = []  # every row's, so that one run of check-data (or of a stage) names them all
    for entry, names in rows:
        try:
            name = resolve(entry, source)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if name in tags:
            problems.append(f"{source}: image {entry!r} is listed twice")
            continue
        unknown = [t for t in names if index.get(t, 0) == 0]  # background (0) is not a tag
        if unknown:
            problems.append(f"{source}: image {entry!r} has tags {unknown} not in the class list {class_names[1:]}"
                            f"{did_you_mean(unknown, class_names[1:])}")
            continue
        tags[name] = tuple(sorted({index[t] - 1 for t in names}))
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS]) + (f"\n  ... and {len(problems) - MAX_PROBLEMS} more"
                                                        if len(problems) > MAX_PROBLEMS else "")
        raise DataError(f"{len(problems)} problems in {source}:\n  {shown}")
    return tags


def _split_tags(text: str) -> list[str]:
    return [t for t in TAG_SEPARATOR.split(text.strip()) if t]


def _read_tags_csv(path: Path) -> list[tuple[str, list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: the header row must have columns {list(CSV_COLUMNS)}, got {header}")
            image_col, tags_col = (header.index(c) for c in CSV_COLUMNS)
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                image = row[image_col].strip() if image_col < len(row) else ""
                if not image:
                    raise DataError(f"{path}: line {reader.line_num} has no image name")
                cells = row[tags_col:tags_col + 1]
                if len(row) > len(header):  # "a.jpg,cat,person": tags split by commas too
                    if tags_col != len(header) - 1:
                        raise DataError(f"{path}: line {reader.line_num} has {len(row)} cells for {len(header)} "
                                        "columns; separate tags with spaces or ';'")
                    cells = row[tags_col:]
                rows.append((image, [tag for cell in cells for tag in _split_tags(cell)]))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read tags file {path}: {exc}") from None


def _read_tags_json(path: Path) -> list[tuple[str, list[str]]]:
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read tags file {path}: {exc}") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: must be an object mapping image file -> list of tags")
    rows = []
    for image, tags in content.items():
        if isinstance(tags, str):
            tags = _split_tags(tags)
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DataError(f"{path}: the tags of {image!r} must be a list of class names, got {tags!r}")
        rows.append((image, [t.strip() for t in tags if t.strip()]))
    return rows


def _split_names(root: Path, split: str, resolve: _EntryResolver, files: dict[str, Path],
                 note_every_image: bool = True) -> list[str]:
    split_file = safe_join(root, f"{split}.txt")
    if not split_file.is_file():
        if not note_every_image:
            return list(files)
        warn_once("no split file %s: split %r is every image in %s, including any you evaluate on; "
                       "list the images of each split in <split>.txt to keep them apart", split_file, split,
                       root / "images")
        return list(files)
    names: list[str] = []
    seen: set[str] = set()
    for line in split_file.read_text(encoding="utf-8-sig").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        name = resolve(entry, split_file)
        if name in seen:
            raise DataError(f"{split_file}: image {entry!r} is listed twice")
        seen.add(name)
        names.append(name)
    return names


__all__ = ["load_folder", "IMAGE_SUFFIXES"]
