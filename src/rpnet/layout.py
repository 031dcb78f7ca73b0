"""Every path of a work dir, and the formats of the files stages hand to each other.

One owner of the layout: stages, the runner, ``rpnet status``, the report, the gallery, the demo,
sweep and the benchmarks find files through :class:`WorkDir`, never by joining names of their own.
README "The pipeline" lists what each stage writes::

    WORK_DIR/
      config.yaml  metrics.json  report.html  gallery/  .rpnet.lock
      <stage folder>/                  one per stage: train_cam, make_cam, ... (the stage name, '-' -> '_')
        config.yaml                    the config the stage ran with
        calibration.json               thresholds chosen from the data (rpnet.calibration)
        model.safetensors  last.pt  log.jsonl  (training stages)
        pictures/                      (eval stages)
      make_cam/cams/<id>.npz           CamFile
      make_ir_label/labels/<id>.png    confident labels
      make_pseudo/{boundaries,walks,masks}/<id>.{png,npz,png}
      eval_seg/{masks,masks_crf}/<id>.png

A leaf module: it imports nothing of rpnet but :mod:`rpnet.io` and :mod:`rpnet.errors`, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
from PIL import Image

from .errors import DataError
from .io import load_npz, read_json, save_image, save_npz, write_json

RUN_CONFIG = "config.yaml"  # the resolved config, at the top of a work dir and in each stage folder
METRICS = "metrics.json"
REPORT = "report.html"
CALIBRATION = "calibration.json"
WEIGHTS = "model.safetensors"  # a training stage's final weights
BEST_WEIGHTS = "best.safetensors"  # train-seg: the weights of the epoch with the best val_miou
LAST_WEIGHTS = "last.safetensors"  # train-seg: the last epoch's weights (model.safetensors may be the best's)
CHECKPOINT = "last.pt"
LOG = "log.jsonl"
TRACE = "trace"  # with engine.trace: one rank<r>.jsonl per rank
PICTURES = "pictures"
GALLERY = "gallery"
GREY_LEVELS = 255  # boundary probabilities in [0, 1] are stored as 0..255


def stage_folder(stage: str) -> str:
    """The folder of stage ``stage`` under the work dir: its name with '-' -> '_' (``make-cam`` -> ``make_cam``)."""
    return stage.replace("-", "_")


def _path(stage: str | None, name: str, doc: str) -> property:
    """A read-only path property of :class:`WorkDir`: ``name`` in stage ``stage``'s folder (None: the top)."""
    return property(lambda self: (self.root if stage is None else self.stage(stage)) / name, doc=doc)


@dataclass(frozen=True)
class WorkDir:
    """The paths of one work dir. ``WorkDir(cfg.work_dir)``; nothing is created by asking for a path."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    def stage(self, name: str) -> Path:
        """``WORK_DIR/<stage folder>``."""
        return self.root / stage_folder(name)

    def stage_config(self, name: str) -> Path:
        return self.stage(name) / RUN_CONFIG

    def calibration(self, name: str) -> Path:
        return self.stage(name) / CALIBRATION

    def weights(self, name: str) -> Path:
        """A training stage's final weights (``train-cam``, ``train-irn``, ``train-seg``)."""
        return self.stage(name) / WEIGHTS

    def pictures(self, name: str) -> Path:
        return self.stage(name) / PICTURES

    def cam(self, image_id: str) -> Path:
        """One image's :class:`CamFile`."""
        return self.cams / f"{image_id}.npz"

    # The top level, then what one stage hands to the next (stage, path under its folder).
    config = _path(None, RUN_CONFIG, "the config `rpnet run` resolved")
    metrics = _path(None, METRICS, "every stage's figures (update_metrics)")
    report = _path(None, REPORT, "the HTML report")
    gallery = _path(None, GALLERY, "the per-image gallery")
    cams = _path("make-cam", "cams", "make-cam's CamFile per image")
    cam_sweep = _path("eval-cam", "sweep.json", "eval-cam's CAM mIoU per background threshold (the report's curve)")
    ir_labels = _path("make-ir-label", "labels", "confident labels (PNG: 0 background, k + 1 class k, 255 unsure)")
    boundaries = _path("make-pseudo", "boundaries", "IRN's boundary maps (save_boundary)")
    walks = _path("make-pseudo", "walks", "walked CAMs (keys, walked, size)")
    pseudo_masks = _path("make-pseudo", "masks", "pseudo masks (VOC palette PNG), train-seg's labels")
    review = _path("make-pseudo", "review.csv", "each image's tags ranked by their share of its pseudo mask, empty first")
    seg_best_weights = _path("train-seg", BEST_WEIGHTS, "the weights of the epoch with the best val_miou")
    seg_last_weights = _path("train-seg", LAST_WEIGHTS, "the last epoch's weights")
    seg_masks = _path("eval-seg", "masks", "eval-seg's predicted masks")
    seg_masks_crf = _path("eval-seg", "masks_crf", "eval-seg's predicted masks after the dense CRF")


def update_metrics(work_dir: str | Path, *, drop: Iterable[str] = (), **values: Any) -> dict[str, Any]:
    """Merge ``values`` into the work dir's ``metrics.json`` (README "The pipeline") and return the whole object.

    Keys in ``drop`` are removed first: figures the stage no longer computes must not linger.
    """
    path = WorkDir(work_dir).metrics
    metrics = read_json(path) if path.exists() else {}
    for key in drop:
        metrics.pop(key, None)
    metrics.update(values)
    write_json(path, metrics)
    return metrics


class CamFile(NamedTuple):
    """One image's CAMs as make-cam writes them (docs/method.md stage 2), both float16 in [0, 1].

    keys: (K,) int64, the tagged foreground classes (0-based, background excluded).
    cam: (K, ceil(H / 4), ceil(W / 4)), each class's map at the walk's stride, divided by its max.
    high_res: (K, H, W), the same at the image's size.
    """

    keys: np.ndarray
    cam: np.ndarray
    high_res: np.ndarray


def save_cams(path: str | Path, cams: CamFile) -> Path:
    """Write a :class:`CamFile` as an .npz (atomically, no pickle)."""
    return save_npz(path, keys=np.asarray(cams.keys, dtype=np.int64), cam=np.asarray(cams.cam, dtype=np.float16),
                    high_res=np.asarray(cams.high_res, dtype=np.float16))


def load_cams(path: str | Path) -> CamFile:
    """A :class:`CamFile` written by :func:`save_cams`; a DataError naming the file when it cannot be read."""
    arrays = load_npz(path)
    missing = [k for k in CamFile._fields if k not in arrays]
    if missing:
        raise DataError(f"{path} is not a CAM file (no {', '.join(missing)}); rerun make-cam")
    return CamFile(*(arrays[k] for k in CamFile._fields))


def save_boundary(path: str | Path, edge: np.ndarray) -> Path:
    """A boundary map (h, w) of probabilities in [0, 1] as an 8-bit grey PNG, written atomically."""
    grey = np.rint(np.clip(edge, 0.0, 1.0) * GREY_LEVELS).astype(np.uint8)
    return save_image(path, grey)


def load_boundary(path: str | Path) -> np.ndarray:
    """A boundary map written by :func:`save_boundary` -> (h, w) float32 in [0, 1]."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.float32) / GREY_LEVELS
