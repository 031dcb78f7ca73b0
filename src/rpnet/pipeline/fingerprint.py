"""Fingerprints: a short hash of everything a stage's outputs are made from.

A stage's fingerprint hashes (1) the config sections it reads (see :mod:`.graph`),
without :data:`~.graph.RUNTIME_KEYS`; (2) its upstream stages' fingerprints, so that a
change upstream changes every stage below it; (3) the dataset's fingerprint.

The dataset fingerprint covers the ``data`` section and a listing (relative name,
size, modification time) of the files that decide which images the splits the config names
(``data.train_split``, ``data.eval_split`` and every stage's ``split``) hold and their tags:
VOC's ``ImageSets/Segmentation/<split>.txt`` (and, with ``data.sbd_root``, VOC's train / val
lists and SBD's ``train.txt`` / ``val.txt``), COCO's ``annotations/instances_<split>.json``, the
folder layout's ``<split>.txt`` and ``tags.csv`` / ``tags.json``, ``classes.txt`` and
``data.classes``. Other split files do not count: adding one reruns nothing. It does not read
images or masks: editing an image in place is not noticed (rerun with ``--from``).

The calibration split (``data.calibration_split``) is left out of the dataset fingerprint: only the
stages that read its masks (``Stage.calibrated``) hash it, with its split file and the listing of its
mask files (:func:`calibration_fingerprint`), so adding a handful of masks to a finished run reruns
the calibrated stages and those below them, never the classifier or its CAMs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Iterable

from ..config import Config, DataConfig, to_dict
from ..data.build import calibration_dataset, calibration_split_file, splits_drawn
from ..errors import ConfigError
from .graph import RUNTIME_KEYS, stage_order, stage_spec

FINGERPRINT_CHARS = 16  # of the sha256 hex digest; 64 bits tell runs of one work dir apart
# The files that decide which images a split holds and their tags; {split} is each split the config names.
DATA_INDEX_FILES: dict[str, tuple[str, ...]] = {
    "voc": ("ImageSets/Segmentation/{split}.txt", "classes.txt"),
    "coco": ("annotations/instances_{split}.json", "classes.txt"),
    "folder": ("{split}.txt", "classes.txt", "tags.csv", "tags.json"),
}
VOC_TRAIN_AUG_FILES = ("ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt")  # with data.sbd_root
SBD_INDEX_FILES = ("train.txt", "val.txt")


def digest(obj: Any) -> str:
    """A stable hash of a JSON-able value (dict order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]


CALIBRATION_KEY = "data.calibration_split"  # hashed by the calibrated stages only


def _listing(root: Path | None, names: list[str]) -> list[list[Any]]:
    if root is None or not root.is_dir():
        return []
    files = sorted({root / name for name in names if (root / name).is_file()})
    return [[p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _stat(path: Path) -> list[Any]:
    return [path.as_posix(), path.stat().st_size, path.stat().st_mtime_ns] if path.is_file() else [path.as_posix()]


def data_files(data: DataConfig, splits: Iterable[str] = ()) -> dict[str, list[list[Any]]]:
    """The index files of the dataset's splits as ``{"root": [[name, size, mtime_ns], ...], ...}``: those
    of ``data.train_split``, ``data.eval_split`` and ``splits`` (the calibration split's are
    :func:`calibration_fingerprint`'s)."""
    if data.format not in DATA_INDEX_FILES:  # never a silent skip: a changed split would look unchanged
        raise ConfigError(f"data.format {data.format!r} lists no index files in "
                          "rpnet.pipeline.fingerprint.DATA_INDEX_FILES, so `rpnet run` could not see its splits change")
    named = sorted({data.train_split, data.eval_split, *splits})
    names = [pattern.format(split=split) for pattern in DATA_INDEX_FILES[data.format] for split in named]
    if data.format == "voc" and data.sbd_root is not None:
        names += VOC_TRAIN_AUG_FILES
    listing = {"root": _listing(data.root and Path(data.root), names)}
    if data.sbd_root is not None:
        listing["sbd_root"] = _listing(Path(data.sbd_root), list(SBD_INDEX_FILES))
    if data.classes is not None and Path(data.classes).is_file():
        stat = Path(data.classes).stat()
        listing["classes"] = [[Path(data.classes).name, stat.st_size, stat.st_mtime_ns]]
    if splits_drawn(data):  # which images have masks decides the draw
        masks = Path(data.root) / "masks"
        listing["masks"] = sorted(p.name for p in masks.iterdir()) if masks.is_dir() else []
    return listing


DATA_PATHS = ("root", "sbd_root", "classes")  # data keys that name a file or folder


def data_values(data: DataConfig) -> dict[str, Any]:
    """The ``data`` section as plain data, its paths resolved (absolute, symlinks followed): the same
    dataset named by a relative path, an absolute one or a link is the same input."""
    raw = to_dict(data)
    for key in DATA_PATHS:
        if raw.get(key) is not None:
            raw[key] = Path(raw[key]).expanduser().resolve().as_posix()
    return raw


def data_fingerprint(data: DataConfig, splits: Iterable[str] = ()) -> str:
    """The dataset's fingerprint: the ``data`` section (paths resolved; runtime keys and the calibration
    split left out) and :func:`data_files` of its splits and ``splits``."""
    return digest({"data": section_values(data_values(data), "data"), "files": data_files(data, splits)})


def named_splits(cfg: Config) -> list[str]:
    """The splits the stages' own ``split`` keys name (``make_cam.split``, ``eval_seg.split``, ...)."""
    return sorted({section.split for section in vars(cfg).values()
                   if is_dataclass(section) and isinstance(getattr(section, "split", None), str)})


def calibration_fingerprint(data: DataConfig) -> str | None:
    """The calibration split's fingerprint: its name, its file and the mask files of its images (name,
    size, modification time; COCO's masks are painted from the annotation files the dataset fingerprint
    lists). None without a calibration split."""
    path = calibration_split_file(data)
    if path is None:
        return None
    images = calibration_dataset(data) if path.is_file() else None  # a missing file fails in the stage
    masks = sorted(_stat(Path(r.mask)) for r in images.records if r.mask is not None) if images else []
    return digest({"split": data.calibration_split, "file": _stat(path), "masks": masks})


def section_values(value: Any, key: str) -> Any:
    """``value`` (a section as plain data) without the :data:`RUNTIME_KEYS` (and the calibration split,
    hashed on its own) under ``key``."""
    if isinstance(value, dict):
        return {k: section_values(v, f"{key}.{k}") for k, v in value.items()
                if f"{key}.{k}" not in RUNTIME_KEYS and f"{key}.{k}" != CALIBRATION_KEY}
    return value


def declared_value(raw: dict[str, Any], key: str) -> Any:
    """The value of a declared section (``"pseudo"``) or single key (``"eval_cam.threshold"``) of a config
    as plain data (:func:`rpnet.config.to_dict`); a ConfigError when the config has no such key."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"a stage declares config key {key!r}, which the config does not have")
        node = node[part]
    return node


def stage_fingerprints(cfg: Config, order: list[str] | None = None) -> dict[str, str]:
    """Every stage's fingerprint, in pipeline order (stage name -> hex string)."""
    order = stage_order() if order is None else order
    raw = {**to_dict(cfg), "data": data_values(cfg.data)}
    dataset = data_fingerprint(cfg.data, named_splits(cfg))
    calibration = calibration_fingerprint(cfg.data)
    prints: dict[str, str] = {}
    for name in order:
        spec = stage_spec(name, order)
        sections = {s: section_values(declared_value(raw, s), s) for s in spec.sections if s not in RUNTIME_KEYS}
        # Listed upstream stages come earlier in the order (test_graph checks it), so they are known here.
        upstream = {u: prints[u] for u in spec.upstream}
        inputs = {"stage": name, "sections": sections, "upstream": upstream, "data": dataset}
        if spec.calibrated and calibration is not None:  # absent without a split: fingerprints as before
            inputs["calibration"] = calibration
        prints[name] = digest(inputs)
    return prints
