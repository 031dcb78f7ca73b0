"""The pipeline's stages, declared once: the CLI, ``rpnet run`` / ``status``, the fingerprints and the
report read this table and nothing else.

Each stage is a module of this package with ``run(cfg, *, resume)`` (and, optionally, ``check(cfg)``,
which refuses settings the data cannot satisfy before anything runs). A stage module imports
only downward (models, data, ops, engine, io, :mod:`rpnet.layout`), never another stage: what one
stage hands to the next is a file whose path and format :mod:`rpnet.layout` owns.

Adding a stage: write its module (and its test), and add its :class:`Stage` line below, in pipeline
order. Its folder in the work dir is its name with '-' -> '_' (:func:`rpnet.layout.stage_folder`).

This module stays light (no torch): ``rpnet --help`` reads it, and stage modules are imported only
when they run (:func:`load`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from ..errors import ConfigError


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    name: the command (``rpnet train-cam``) and the key in records and metrics.
    module: the module that runs it.
    sections: the config sections it reads (``"pseudo"``), or single keys of a section where it reads only
        those (``"eval_cam.threshold"``); its fingerprint covers exactly these, plus its upstream.
    upstream: the stages whose outputs it reads.
    help: one line for ``rpnet --help``.
    outputs: what it writes, under its folder of the work dir (README "The pipeline").
    scores: for a stage that only scores against ground truth, the config section whose ``split`` it
        scores (empty: ``data.train_split``); ``rpnet run`` skips it when that split has no masks.
    calibrated: it reads the masks of the calibration split (``data.calibration_split``); its
        fingerprint covers them (:func:`rpnet.pipeline.fingerprint.calibration_fingerprint`).
    """

    name: str
    module: str
    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    help: str
    outputs: str
    scores: str | None = None
    calibrated: bool = False


STAGES: tuple[Stage, ...] = (
    Stage("train-cam", "rpnet.stages.train_cam", ("seed", "data", "model", "train_cam"), (),
          "stage 1: train the classifier (RPNet, or the plain-CAM baseline)",
          "model.safetensors, last.pt, log.jsonl"),
    Stage("make-cam", "rpnet.stages.make_cam", ("seed", "data", "model", "make_cam"), ("train-cam",),
          "stage 2: multi-scale CAMs for every training image",
          "cams/<id>.npz"),
    Stage("eval-cam", "rpnet.stages.eval_cam", ("data", "eval_cam"), ("make-cam",),
          "stage 3: CAM mIoU and the best background threshold",
          "calibration.json, pictures/; cam_* in metrics.json", scores="eval_cam", calibrated=True),
    # make-ir-label builds the training split with the seed (for_training=True).
    Stage("make-ir-label", "rpnet.stages.make_ir_label", ("seed", "data", "ir_label"), ("make-cam",),
          "stage 4: confident foreground/background labels from CAMs (dense CRF)",
          "labels/<id>.png, calibration.json", calibrated=True),
    # train-irn starts from stage 1's backbone when no ImageNet weights are given.
    Stage("train-irn", "rpnet.stages.train_irn", ("seed", "data", "model", "ir_label", "train_irn"),
          ("train-cam", "make-ir-label"),
          "stage 5: train the inter-pixel relation network (boundaries, displacements)",
          "model.safetensors, last.pt, log.jsonl"),
    # make-pseudo pads to train_irn.crop_size, as the IRN was trained; with pseudo.source cam (or auto with a
    # calibration split) it thresholds the CAMs at eval_cam.threshold.
    Stage("make-pseudo", "rpnet.stages.make_pseudo", ("seed", "data", "model", "train_irn", "pseudo", "eval_cam.threshold"),
          ("make-cam", "train-irn"),
          "stage 6: pseudo masks by random walk on the IRN boundary map (or the CAMs, where masks say so)",
          "boundaries/<id>.png, walks/<id>.npz, masks/<id>.png, calibration.json", calibrated=True),
    # eval-pseudo draws the CAM mask at eval-cam's calibrated threshold (or eval_cam.threshold's number).
    Stage("eval-pseudo", "rpnet.stages.eval_pseudo", ("data", "eval_cam", "eval_pseudo"),
          ("make-cam", "eval-cam", "make-pseudo"),
          "stage 7: pseudo-mask mIoU",
          "pictures/; pseudo_* in metrics.json", scores="eval_pseudo", calibrated=True),
    # train-seg starts from stage 1's backbone when no ImageNet weights are given (backbone_init auto).
    Stage("train-seg", "rpnet.stages.train_seg", ("seed", "data", "model", "train_seg"), ("train-cam", "make-pseudo"),
          "stage 8: train the segmentation model (DeepLab) on the pseudo masks (or the ground truth)",
          "model.safetensors, best.safetensors, last.pt, log.jsonl", calibrated=True),
    # eval-seg runs without masks too: it then writes the model's predictions for its split.
    Stage("eval-seg", "rpnet.stages.eval_seg", ("data", "eval_seg"), ("train-seg",),
          "stage 9: multi-scale segmentation mIoU with and without a dense CRF; masks for submission",
          "masks/, masks_crf/, pictures/, inference.json; seg_* in metrics.json"),
)

def names() -> list[str]:
    """The stage names in pipeline order."""
    return [s.name for s in STAGES]


def stage(name: str) -> Stage:
    """The declaration of stage ``name``; a ConfigError listing the stages when there is none."""
    found = next((s for s in STAGES if s.name == name), None)
    if found is None:
        raise ConfigError(f"unknown stage {name!r}; choose from {', '.join(names())}")
    return found


def load(name: str) -> ModuleType:
    """The module that runs stage ``name`` (imported now)."""
    return importlib.import_module(stage(name).module)
