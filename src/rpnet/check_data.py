"""``rpnet check-data CONFIG``: what a run would trip on in the dataset a config names, before it runs.

A run finds a bad dataset late: an unreadable photo stops make-cam after the classifier has
trained, a batch larger than the training set stops train-irn after two stages, and a class
nobody tagged stops nothing at all: it just never appears in a CAM. This check loads each split
with the loaders a run uses (:func:`rpnet.data.build.build_dataset`), reads every image with the
reader a run uses (:func:`rpnet.data.images.read_image`) and every mask file with the mask
loader, and sorts what it finds into:

- errors, which would stop a run: a loader's :class:`~rpnet.errors.DataError` (a class-list
  problem, a tag not in the class list, a missing split file or image, an empty split), a
  training split with no tagged image, unreadable images, masks that do not fit their image or
  the class list, and whatever each stage's ``check(cfg)`` refuses (a batch larger than the
  training images: the checks ``rpnet run`` makes before its first stage);
- warnings, which would not: classes with no or few training images, untagged training images
  (left out of classifier training), images in both splits while the evaluation split has masks
  to score, images far smaller or larger than the classifier's training scale;
- notes: splits without masks (their evaluation stages are skipped, which is fine for your own
  photos), a folder split that is every image, ``data.fraction``.

Image sizes are judged against ``train_cam.resize_long`` = (low, high), the range the classifier
rescales each image's long side into, rather than against the crop: crops are taken after that
rescale (and padded), so an image's own size never meets the crop. An image whose long side is
below ``low`` is upscaled for training, and make-cam, which runs at the image's own size, gives
it a CAM of a few cells (stride 16). One whose long side is above
:data:`LARGE_FACTOR` x ``high`` shows its objects to make-cam several times larger than the
classifier ever saw them, and costs memory and time at every per-image stage: resize such
photos first.

Only splits ``data.train_split`` and ``data.eval_split`` are checked. No model is built.
:func:`check_data` returns a :class:`DataFindings`, :func:`format_findings` the text report,
:func:`findings_json` the JSON one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .config import Config, DataConfig
from .data.build import build_dataset, calibration_dataset
from .data.dataset import MAX_IDS_REPORTED, ImageRecord, TaggedImages, read_mask_file
from .data.folder import IMAGE_SUFFIXES as FOLDER_SUFFIXES
from .data.images import read_image
from .data.subsets import stratified_fraction
from .errors import DataError, RpnetError
from .io import IGNORE_INDEX

FEW_IMAGES = 5  # a class with fewer training images than this gets a warning
LARGE_FACTOR = 2  # a long side above LARGE_FACTOR x train_cam.resize_long's high end is "much larger"
PAINTED_MASKS = frozenset({"coco"})  # layouts whose masks are painted from annotations, not read from files
MAX_WORKERS = 8  # threads reading images (PIL decodes without holding the GIL)


@dataclass(frozen=True)
class SizeStats:
    """Image sizes of a split in pixels: min, median and max of the widths and of the heights."""

    width: tuple[int, float, int]
    height: tuple[int, float, int]


@dataclass
class SplitFindings:
    """What one split holds. ``error`` is the loader's message when the split could not be read
    (every other field then stays empty)."""

    name: str
    role: str  # "train", "eval" or "train, eval" (data.train_split == data.eval_split)
    images: int = 0
    per_class: dict[str, int] = field(default_factory=dict)  # foreground class -> images tagged with it
    untagged: list[str] = field(default_factory=list)  # ids
    training_images: int | None = None  # the classifier's images (untagged dropped, data.fraction); train only
    with_mask: int = 0
    unreadable: list[str] = field(default_factory=list)  # one message per unreadable image, naming the file
    bad_masks: list[str] = field(default_factory=list)  # one message per mask a run could not use
    sizes: SizeStats | None = None
    # ids with a long side below train_cam.resize_long[0] / above LARGE_FACTOR x resize_long[1] (judged for
    # the training split only: the evaluation split is not rescaled to resize_long)
    small: list[str] = field(default_factory=list)
    large: list[str] = field(default_factory=list)
    every_image: bool = False  # folder layout without <split>.txt: the split is every image
    error: str | None = None


@dataclass
class DataFindings:
    """Everything :func:`check_data` found. ``errors`` would stop a run; ``ok`` when there are none."""

    config: str
    format: str
    root: str
    class_names: list[str]  # background first; empty when no split could be read
    splits: list[SplitFindings]
    overlap: list[str]  # ids in both the training and the evaluation split
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ImageScan:
    """One image read as a run reads it: its (width, height), or why it or its mask cannot be used."""

    size: tuple[int, int] | None
    image_problem: str | None = None
    mask_problem: str | None = None


def mask_problem(mask: np.ndarray | None, shape: tuple[int, int] | None, num_classes: int) -> str | None:
    """Why an (H, W) label map cannot score an image of ``shape`` (H, W) over ``num_classes``
    foreground classes, or None: the checks a run makes when it reads a mask for scoring."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if shape is not None and mask.shape != tuple(shape):
        return f"mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but the image is {shape[0]}x{shape[1]}"
    bad = (mask > num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        return f"label {int(mask[bad].max())} is not a class (labels 0..{num_classes} and {IGNORE_INDEX})"
    return None


def scan_record(record: ImageRecord, read_mask: Callable[[ImageRecord], Any] | None, num_classes: int) -> ImageScan:
    """Read ``record``'s image (and, with ``read_mask``, its mask file) the way a run does."""
    try:
        height, width = read_image(record.image).shape[:2]
    except DataError as exc:
        return ImageScan(None, image_problem=str(exc))
    if read_mask is None or record.mask is None:
        return ImageScan((width, height))
    try:
        problem = mask_problem(read_mask(record), (height, width), num_classes)
    except DataError as exc:
        return ImageScan((width, height), mask_problem=str(exc))
    return ImageScan((width, height), mask_problem=None if problem is None else f"{record.mask}: {problem}")


def scan_images(dataset: TaggedImages, painted: bool, workers: int | None = None) -> list[ImageScan]:
    """:func:`scan_record` for every image of ``dataset``, in order, on ``workers`` threads.

    ``painted``: the layout paints masks from annotations (COCO); they are not painted here.
    """
    read_mask = None if painted else (dataset.mask_loader or read_mask_file)
    workers = workers or min(MAX_WORKERS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda r: scan_record(r, read_mask, dataset.num_classes), dataset.records))


# --------------------------------------------------------------------------- summaries (pure)


def class_counts(records: Sequence[ImageRecord], class_names: Sequence[str]) -> dict[str, int]:
    """Foreground class name -> how many of ``records`` are tagged with it, in class-list order."""
    counts = dict.fromkeys(class_names[1:], 0)
    for record in records:
        for tag in record.tags:
            counts[class_names[tag + 1]] += 1
    return counts


def size_stats(sizes: Sequence[tuple[int, int]]) -> SizeStats | None:
    """Min / median / max of the widths and heights of (width, height) pairs; None for none."""
    if not sizes:
        return None
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    return SizeStats((min(widths), float(statistics.median(widths)), max(widths)),
                     (min(heights), float(statistics.median(heights)), max(heights)))


def training_count(records: Sequence[ImageRecord], num_classes: int, fraction: float, seed: int) -> int:
    """How many of ``records`` the classifier trains on: the tagged ones, then ``data.fraction`` of
    each class (:func:`rpnet.data.subsets.stratified_fraction`, as :func:`build_dataset` keeps them)."""
    tagged = [r for r in records if r.tags]
    if fraction >= 1.0 or not tagged:
        return len(tagged)
    matrix = np.zeros((len(tagged), num_classes), dtype=bool)
    for row, record in enumerate(tagged):
        matrix[row, list(record.tags)] = True
    return len(stratified_fraction(matrix, fraction, seed))


def summarize_split(
    split: SplitFindings, dataset: TaggedImages, scans: Sequence[ImageScan], *, painted: bool,
    resize_long: tuple[int, int], fraction: float, seed: int,
) -> SplitFindings:
    """Fill ``split`` from the records of ``dataset`` and their scans (one per record, in order)."""
    records = dataset.records
    split.images = len(records)
    split.per_class = class_counts(records, dataset.class_names)
    split.untagged = [r.id for r in records if not r.tags]
    if "train" in split.role:
        split.training_images = training_count(records, dataset.num_classes, fraction, seed)
    split.with_mask = len(records) if painted else sum(r.mask is not None for r in records)
    split.unreadable = [s.image_problem for s in scans if s.image_problem]
    split.bad_masks = [s.mask_problem for s in scans if s.mask_problem]
    sized = [(r.id, s.size) for r, s in zip(records, scans) if s.size is not None]
    split.sizes = size_stats([size for _, size in sized])
    split.small = [i for i, size in sized if max(size) < resize_long[0]]
    split.large = [i for i, size in sized if max(size) > LARGE_FACTOR * resize_long[1]]
    return split


def count(items: Sequence[Any] | int, noun: str) -> str:
    """``"1 image"``, ``"3 images"``: how many of ``items`` (a sequence or a number), with the noun."""
    n = items if isinstance(items, int) else len(items)
    return f"{n} {noun}{'' if n == 1 else 's'}"


def examples(ids: Sequence[str]) -> str:
    """Up to MAX_IDS_REPORTED ids, comma-separated, "..." when there are more."""
    return ", ".join(ids[:MAX_IDS_REPORTED]) + (", ..." if len(ids) > MAX_IDS_REPORTED else "")


def assess(
    findings: DataFindings, *, resize_long: tuple[int, int], fraction: float,
    eval_stages: dict[str, list[str]], folder_split_files: dict[str, str], untagged_as_background: bool = True,
) -> DataFindings:
    """Sort what the splits hold into ``findings.errors``, ``warnings`` and ``notes`` (appended).

    ``eval_stages``: split name -> the evaluation stages that score it; ``folder_split_files``:
    split name -> its ``<split>.txt`` path, for the splits that are every image.
    """
    errors, warnings, notes = findings.errors, findings.warnings, findings.notes
    loaded = [s for s in findings.splits if s.error is None]
    failed: dict[str, list[str]] = {}  # a loader's message -> the splits it stopped (a bad tags file stops both)
    for split in findings.splits:
        if split.error is not None:
            failed.setdefault(split.error, []).append(repr(split.name))
    for message, names in failed.items():
        named = all(f"split {name}" in message for name in names)  # build_dataset's "split 'val' ... is empty"
        errors.append(message if named else f"split{'s' if len(names) > 1 else ''} {' and '.join(names)}: {message}")
    for split in loaded:
        label = f"split {split.name!r}"
        errors.extend(f"{label}: {problem}" for problem in split.unreadable + split.bad_masks)
        if split.training_images == 0:
            errors.append(f"{label}: no image has a tag, so the classifier has nothing to learn from")
        if split.every_image:
            notes.append(f"{label}: there is no {folder_split_files[split.name]}, so the split is every image "
                         "in images/")
        if split.with_mask == 0:
            stages = eval_stages.get(split.name, [])
            if stages:
                notes.append(f"{label}: no masks: evaluation stages will be skipped ({', '.join(stages)}); "
                             "fine for your own photos")
            if "eval" in split.role:
                notes.append(f"{label}: no masks: eval-seg writes the model's predictions for it without scoring them")
        elif split.with_mask < split.images:
            notes.append(f"{label}: {split.with_mask} of {split.images} images have a mask; the others are not scored")
    train = next((s for s in loaded if "train" in s.role), None)
    if train is not None:
        if train.small:
            warnings.append(f"split {train.name!r}: {count(train.small, 'image')} with a long side under {resize_long[0]} "
                            f"px (train_cam.resize_long low): upscaled for training, CAMs of a few cells: "
                            f"{examples(train.small)}")
        if train.large:
            warnings.append(f"split {train.name!r}: {count(train.large, 'image')} with a long side over "
                            f"{LARGE_FACTOR * resize_long[1]} px ({LARGE_FACTOR} x train_cam.resize_long high): make-cam "
                            f"sees objects far larger than training did, and every per-image stage is slow; resize "
                            f"them first: {examples(train.large)}")
        if train.untagged:
            use = ("train-seg learns them as background (train_seg.untagged)" if untagged_as_background
                   else "train-seg leaves them out too (train_seg.untagged: drop)")
            # Information, not a warning: photos without the classes are what train-seg's background needs.
            notes.append(f"split {train.name!r}: {len(train.untagged)} of {count(train.images, 'image')} have no tag and are "
                         f"left out of classifier training; {use}: {examples(train.untagged)}")
        if fraction < 1.0:
            notes.append(f"data.fraction {fraction:g}: the classifier trains on {train.training_images} of "
                         f"{train.images - len(train.untagged)} tagged images")
        absent = [c for c, n in train.per_class.items() if n == 0]
        few = [f"{c} ({n})" for c, n in train.per_class.items() if 0 < n < FEW_IMAGES]
        if absent:
            warnings.append(f"classes with no training image (never learnt: no CAM, no pseudo mask shows them): "
                            f"{', '.join(absent)}")
        if few:
            warnings.append(f"classes with fewer than {FEW_IMAGES} training images: {', '.join(few)}")
    if findings.overlap:
        evaluated = next((s for s in loaded if "eval" in s.role), None)
        where = " and ".join(repr(s.name) for s in findings.splits)
        what = f"{count(findings.overlap, 'image')} in both {where}" if len(findings.splits) > 1 else \
            f"the evaluation split is the training split ({count(findings.overlap, 'image')})"
        if evaluated is not None and evaluated.with_mask:
            warnings.append(f"{what}: evaluation scores images the models trained on: {examples(findings.overlap)}")
        else:
            notes.append(f"{what}; nothing to score there without masks")
    return findings


# --------------------------------------------------------------------------- the check


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Raise ``logger``'s level to ERROR for the block: what it would log, the report says."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def load_split(data: DataConfig, name: str) -> tuple[TaggedImages | None, str | None]:
    """Split ``name`` as a run loads it, with masks, untagged images kept; or the loader's error."""
    try:
        with quiet("rpnet.data"):  # e.g. the folder loader's "no split file": the report says it
            return build_dataset(data, name, masks=True), None
    except RpnetError as exc:
        return None, str(exc)


def stage_check_errors(cfg: Config) -> list[str]:
    """What each stage's ``check(cfg)`` refuses (the checks ``rpnet run`` makes before its first stage)."""
    from . import stages

    errors = []
    with quiet("rpnet.data"):  # the checks reload the training split; its warnings are in the report already
        for name in stages.names():
            check = getattr(stages.load(name), "check", None)
            if check is None:
                continue
            try:
                check(cfg)
            except RpnetError as exc:
                errors.append(f"{name}: {exc}")
    return errors


def check_data(cfg: Config, config: str = "", workers: int | None = None) -> DataFindings:
    """Check the dataset ``cfg.data`` names (see the module docstring); ``config`` names the file for the report."""
    from .pipeline.graph import scored_split, scoring_stages

    data = cfg.data
    roles = {data.train_split: ["train"]}
    roles.setdefault(data.eval_split, []).append("eval")
    painted = data.format in PAINTED_MASKS
    resize_long = tuple(cfg.train_cam.resize_long)
    splits, datasets = [], {}
    for name, role in roles.items():
        split = SplitFindings(name, ", ".join(role))
        dataset, split.error = load_split(data, name)
        if dataset is not None:
            datasets[name] = dataset
            summarize_split(split, dataset, scan_images(dataset, painted, workers), painted=painted,
                            resize_long=resize_long, fraction=data.fraction, seed=cfg.seed)
        splits.append(split)
    split_files = {}
    if data.format == "folder" and data.root is not None:
        split_files = {n: str(Path(data.root) / f"{n}.txt") for n in roles if not (Path(data.root) / f"{n}.txt").is_file()}
        for split in splits:
            split.every_image = split.error is None and split.name in split_files
    if len(roles) == 1:
        overlap = sorted(datasets[data.train_split].ids) if datasets else []
    elif data.train_split in datasets and data.eval_split in datasets:
        overlap = sorted(set(datasets[data.train_split].ids) & set(datasets[data.eval_split].ids))
    else:
        overlap = []
    class_names = list(next(iter(datasets.values())).class_names) if datasets else []
    findings = DataFindings(config, data.format, str(data.root), class_names, splits, overlap)
    eval_stages: dict[str, list[str]] = {}
    for stage in scoring_stages():
        eval_stages.setdefault(scored_split(cfg, stage), []).append(stage)
    assess(findings, resize_long=resize_long, fraction=data.fraction, eval_stages=eval_stages,
           untagged_as_background=cfg.train_seg.untagged == "background",
           folder_split_files=split_files)
    check_calibration_split(findings, data)
    if data.format == "folder" and data.root is not None and not split_files:
        check_images_outside_splits(findings, Path(data.root), [d.records for d in datasets.values()], workers)
    train = splits[0]
    if train.error is None and train.training_images:
        findings.errors.extend(stage_check_errors(cfg))
    return findings


def check_images_outside_splits(findings: DataFindings, root: Path, splits: Sequence[Sequence[ImageRecord]],
                                workers: int | None = None) -> None:
    """Folder layout with split files: the images of ``images/`` that no split lists are never used; say so,
    and read them too, so that an unreadable one is found before it is listed (a warning: no run reads it)."""
    listed = {record.image.resolve() for records in splits for record in records}
    image_dir = root / "images"
    if not image_dir.is_dir():
        return
    outside = [p for p in sorted(image_dir.iterdir()) if p.is_file() and not p.name.startswith(".")
               and p.suffix.lower() in FOLDER_SUFFIXES and p.resolve() not in listed]
    if not outside:
        return
    findings.notes.append(f"{count(len(outside), 'image')} in {image_dir} {'is' if len(outside) == 1 else 'are'} in no "
                          f"split file, so no run uses them: {examples([p.name for p in outside])}")
    records = [ImageRecord(id=p.stem, image=p, tags=()) for p in outside]
    workers = workers or min(MAX_WORKERS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        scans = list(pool.map(lambda r: scan_record(r, None, 1), records))
    for scan in scans:
        if scan.image_problem:
            findings.warnings.append(f"outside every split: {scan.image_problem}")


def check_calibration_split(findings: DataFindings, data: DataConfig) -> None:
    """What ``data.calibration_split`` holds (docs/calibration.md), or why a run would refuse it."""
    if data.calibration_split is None:
        return
    try:
        with quiet("rpnet.data"):
            images = calibration_dataset(data)
    except RpnetError as exc:
        findings.errors.append(str(exc))
        return
    findings.notes.append(f"calibration split {data.calibration_split!r}: {count(len(images), 'image')} with masks: "
                          "the thresholds and the label source are chosen on them, and they are never scored")
    if len(images) < FEW_IMAGES:
        findings.warnings.append(f"calibration split {data.calibration_split!r} has {count(len(images), 'image')}: "
                                 f"with fewer than {FEW_IMAGES} the quality estimate is rough (none with one image); "
                                 "10-20 is a good size")


# --------------------------------------------------------------------------- output


def findings_json(findings: DataFindings) -> dict[str, Any]:
    """The findings as a JSON-ready dict (``ok`` included)."""
    return {"ok": findings.ok, **dataclasses.asdict(findings)}


def _sizes(stats: SizeStats | None, axis: str) -> str:
    if stats is None:
        return "-"
    low, median, high = getattr(stats, axis)
    return f"{low}/{median:g}/{high}"


def format_findings(findings: DataFindings) -> str:
    """The text report: the dataset, a table of the splits side by side, then errors, warnings, notes."""
    lines = [f"rpnet check-data: {findings.format} dataset at {findings.root}"
             + (f" (config {findings.config})" if findings.config else "")]
    if findings.class_names:
        lines.append(f"classes ({findings.class_names[0]} + {len(findings.class_names) - 1}): "
                     + ", ".join(findings.class_names[1:]))
    loaded = [s for s in findings.splits if s.error is None]
    if loaded:
        rows: list[tuple[str, ...]] = [("split", *(s.name for s in loaded)), ("used for", *(s.role for s in loaded)),
                                       ("images", *(str(s.images) for s in loaded)),
                                       ("untagged", *(str(len(s.untagged)) for s in loaded)),
                                       ("classifier trains on", *("-" if s.training_images is None
                                                                  else str(s.training_images) for s in loaded)),
                                       ("with a mask", *(str(s.with_mask) for s in loaded)),
                                       ("unreadable images", *(str(len(s.unreadable)) for s in loaded)),
                                       ("width min/median/max", *(_sizes(s.sizes, "width") for s in loaded)),
                                       ("height min/median/max", *(_sizes(s.sizes, "height") for s in loaded)),
                                       ("images per class:", *("" for _ in loaded))]
        rows += [(f"  {name}", *(str(s.per_class[name]) for s in loaded)) for name in loaded[0].per_class]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines += ["  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]).rstrip()
                  for row in rows]
        if len(loaded) > 1:
            lines.append(f"in both splits: {len(findings.overlap)}")
    for title, items in (("errors (a run would stop)", findings.errors), ("warnings", findings.warnings),
                         ("notes", findings.notes)):
        if items:
            lines += ["", f"{title}:", *(f"  - {item}" for item in items)]
    counts = f"{count(findings.errors, 'error')}, {count(findings.warnings, 'warning')}"
    verdict = "nothing here would stop a run" if findings.ok else "fix the errors before a run"
    lines += ["", f"result: {counts}: {verdict}"]
    return "\n".join(lines)


__all__ = ["DataFindings", "SplitFindings", "SizeStats", "check_data", "format_findings", "findings_json",
           "class_counts", "size_stats", "mask_problem", "training_count", "assess"]
