"""Fingerprints: a short hash of everything a stage's outputs are made from.

A stage's fingerprint hashes (1) the config sections it reads (see :mod:`.graph`),
without :data:`~.graph.RUNTIME_KEYS`; (2) its upstream stages' fingerprints, so that a
change upstream changes every stage below it; (3) the dataset's fingerprint.

The dataset fingerprint covers the ``data`` section and a listing (relative name,
size, modification time) of the files that decide which images a split holds and their
tags: VOC's ``ImageSets/Segmentation/*.txt`` (and SBD's ``train.txt`` / ``val.txt`` with
``data.sbd_root``), COCO's ``annotations/instances_*.json``, the folder layout's split
``*.txt`` and ``tags.csv`` / ``tags.json``, ``classes.txt`` and ``data.classes``. It does not
read images or masks: editing an image in place is not noticed (rerun with ``--from``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..config import Config, DataConfig, to_dict
from ..errors import ConfigError
from .graph import RUNTIME_KEYS, stage_order, stage_spec

FINGERPRINT_CHARS = 16  # of the sha256 hex digest; 64 bits tell runs of one work dir apart
DATA_INDEX_FILES: dict[str, tuple[str, ...]] = {
    "voc": ("ImageSets/Segmentation/*.txt", "classes.txt"),
    "coco": ("annotations/instances_*.json", "classes.txt"),
    "folder": ("*.txt", "tags.csv", "tags.json"),
}
SBD_INDEX_FILES = ("train.txt", "val.txt")


def digest(obj: Any) -> str:
    """A stable hash of a JSON-able value (dict order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]


def _listing(root: Path | None, patterns: tuple[str, ...]) -> list[list[Any]]:
    if root is None or not root.is_dir():
        return []
    files = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    return [[p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def data_files(data: DataConfig) -> dict[str, list[list[Any]]]:
    """The index files of the dataset as ``{"root": [[name, size, mtime_ns], ...], ...}``."""
    if data.format not in DATA_INDEX_FILES:  # never a silent skip: a changed split would look unchanged
        raise ConfigError(f"data.format {data.format!r} lists no index files in "
                          "rpnet.pipeline.fingerprint.DATA_INDEX_FILES, so `rpnet run` could not see its splits change")
    listing = {"root": _listing(data.root and Path(data.root), DATA_INDEX_FILES[data.format])}
    if data.sbd_root is not None:
        listing["sbd_root"] = _listing(Path(data.sbd_root), SBD_INDEX_FILES)
    if data.classes is not None and Path(data.classes).is_file():
        stat = Path(data.classes).stat()
        listing["classes"] = [[Path(data.classes).name, stat.st_size, stat.st_mtime_ns]]
    return listing


def data_fingerprint(data: DataConfig) -> str:
    """The dataset's fingerprint: the ``data`` section (runtime keys left out) and :func:`data_files`."""
    return digest({"data": section_values(to_dict(data), "data"), "files": data_files(data)})


def section_values(value: Any, key: str) -> Any:
    """``value`` (a section as plain data) without the :data:`RUNTIME_KEYS` under ``key``."""
    if isinstance(value, dict):
        return {k: section_values(v, f"{key}.{k}") for k, v in value.items() if f"{key}.{k}" not in RUNTIME_KEYS}
    return value


def stage_fingerprints(cfg: Config, order: list[str] | None = None) -> dict[str, str]:
    """Every stage's fingerprint, in pipeline order (stage name -> hex string)."""
    order = stage_order() if order is None else order
    raw = to_dict(cfg)
    dataset = data_fingerprint(cfg.data)
    prints: dict[str, str] = {}
    for name in order:
        spec = stage_spec(name, order)
        sections = {s: section_values(raw[s], s) for s in spec.sections if s in raw and s not in RUNTIME_KEYS}
        # Listed upstream stages come earlier in the order (test_graph checks it), so they are known here.
        upstream = {u: prints[u] for u in spec.upstream}
        prints[name] = digest({"stage": name, "sections": sections, "upstream": upstream, "data": dataset})
    return prints
