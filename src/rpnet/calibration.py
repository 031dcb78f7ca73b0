"""Thresholds chosen from the data, never from masks: what ``auto`` means for every threshold key.

A stage that applies a threshold to CAMs or scores computes its estimate from its own inputs
(:mod:`rpnet.ops.calibration` holds the maths), uses it where the config says ``auto`` and the
configured number otherwise, and writes both to ``WORK_DIR/<stage>/calibration.json``::

    {"values":    {"bg_threshold": 0.31},      # what the stage used
     "estimates": {"bg_threshold": 0.31},      # the data's estimate, always computed
     "sources":   {"bg_threshold": "auto"},    # "auto" or "config"
     "evidence":  {...}}                       # what the estimate was computed from

``rpnet status`` and the report show the values; ``docs/calibration.md`` explains each estimator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .config import AUTO, Config, Threshold
from .errors import RpnetError
from .io import read_json, write_json
from .layout import CALIBRATION as CALIBRATION_FILE, WorkDir, load_cams
from .ops.calibration import BINS, otsu_thresholds3, score_histogram


def resolve(configured: Threshold, estimate: float) -> tuple[float, str]:
    """(the value to use, its source): the estimate (rounded to 4 decimals, as calibration.json
    holds it) for ``auto``, else the configured number."""
    return (round(float(estimate), 4), "auto") if configured == AUTO else (float(configured), "config")


def write_calibration(folder: Path, configured: Mapping[str, Threshold], estimates: Mapping[str, float],
                      evidence: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve each key of ``estimates`` against ``configured`` and write ``folder/calibration.json``.

    Returns the values used, by key (rounded to 4 decimals, as written, so that a stage that reads
    them back gets exactly what this one used).
    """
    values, sources = {}, {}
    for key, estimate in estimates.items():
        value, source = resolve(configured[key], estimate)
        values[key], sources[key] = value, source
    write_json(Path(folder) / CALIBRATION_FILE, {
        "values": values, "estimates": {k: round(float(v), 4) for k, v in estimates.items()},
        "sources": sources, "evidence": dict(evidence or {}),
    })
    return values


def read_calibration(folder: Path) -> dict[str, Any]:
    """``folder/calibration.json``; an error naming the file when it is missing or unreadable."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        raise RpnetError(f"no calibration at {path}: run the stage that writes it first")
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        raise RpnetError(f"{path} is unreadable ({exc}): rerun the stage that writes it") from None
    if not isinstance(record, dict) or not isinstance(record.get("values"), dict):
        raise RpnetError(f"{path} has no 'values': rerun the stage that writes it")
    return record


def calibrated_value(folder: Path, key: str) -> float:
    """The value a stage used for ``key``, from its calibration.json."""
    values = read_calibration(folder)["values"]
    if key not in values:
        raise RpnetError(f"{Path(folder) / CALIBRATION_FILE} has no value for {key!r}")
    return float(values[key])


def cam_histogram(cam_paths: list[Path]) -> np.ndarray:
    """The histogram (:data:`rpnet.ops.calibration.BINS`,) of the tagged classes' full-size CAM values
    of these CAM files (this process's; under torchrun the caller sums the ranks')."""
    histogram = np.zeros(BINS, dtype=np.int64)
    for path in cam_paths:
        if not path.exists():
            raise RpnetError(f"no CAM at {path}: run make-cam first")
        histogram += score_histogram(load_cams(path).high_res.astype(np.float32))
    return histogram


def cam_threshold_estimate(histogram: np.ndarray, what: str) -> float:
    """The CAM background threshold calibrated from a CAM value histogram: the lower edge of its
    three-class Otsu split (near-zero background | middle band | strong evidence); docs/calibration.md."""
    if np.count_nonzero(histogram) < 3:
        raise RpnetError(f"the CAMs are (nearly) constant: nothing to calibrate {what} from; set it to a number")
    return otsu_thresholds3(histogram)[0]


def cam_threshold(cfg: Config) -> float:
    """``eval_cam.threshold``, or for ``auto`` the threshold eval-cam calibrated (its calibration.json)."""
    if cfg.eval_cam.threshold != AUTO:
        return float(cfg.eval_cam.threshold)
    return calibrated_value(WorkDir(cfg.work_dir).stage("eval-cam"), "cam_threshold")


def calibration_entries(path: Path) -> list[tuple[str, float, str]]:
    """(key, value used, "auto" or "config") for each threshold of a calibration.json; [] when it is
    missing or unreadable (``rpnet status`` and the report show what there is)."""
    try:
        record = read_json(path)
        return [(key, float(value), str(record["sources"][key])) for key, value in record["values"].items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def calibration_summary(path: Path) -> str:
    """``bg_threshold 0.185 (auto), fg_threshold 0.52 (auto)``: the entries of a calibration.json as text."""
    return ", ".join(f"{key} {value:g} ({source})" for key, value, source in calibration_entries(path))


__all__ = ["CALIBRATION_FILE", "resolve", "write_calibration", "read_calibration", "calibrated_value",
           "cam_histogram", "cam_threshold_estimate", "cam_threshold", "calibration_entries", "calibration_summary"]
