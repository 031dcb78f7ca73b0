"""What each stage depends on: the config sections it reads and the stages whose outputs it reads.

The one place that knows the pipeline's dependency graph. The stage *order* and the
modules come from :data:`rpnet.cli.STAGES`, read at call time, so a stage added there
is run by ``rpnet run`` at once. A stage that :data:`GRAPH` does not list yet is
treated conservatively: it reads every config section and every earlier stage.

``tests/pipeline/test_graph.py`` checks, by reading each stage module's source, that a
stage reads no config section besides those listed here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from ..config import Config
from ..errors import ConfigError


@dataclass(frozen=True)
class StageSpec:
    """``upstream``: stages whose outputs this one reads; ``sections``: top-level config keys it reads."""

    upstream: tuple[str, ...]
    sections: tuple[str, ...]


GRAPH: dict[str, StageSpec] = {
    "train-cam": StageSpec((), ("seed", "data", "model", "train_cam")),
    "make-cam": StageSpec(("train-cam",), ("seed", "data", "model", "make_cam")),
    "eval-cam": StageSpec(("make-cam",), ("data", "eval_cam")),
    # ir_label_dataset builds the training split with the seed (for_training=True).
    "make-ir-label": StageSpec(("make-cam",), ("seed", "data", "ir_label")),
    # train-irn starts from stage 1's backbone when no ImageNet weights are given.
    "train-irn": StageSpec(("train-cam", "make-ir-label"), ("seed", "data", "model", "ir_label", "train_irn")),
    # make-pseudo pads to train_irn.crop_size, as the IRN was trained.
    "make-pseudo": StageSpec(("make-cam", "train-irn"), ("seed", "data", "model", "train_irn", "pseudo")),
    # eval-pseudo draws the CAM mask at eval-cam's calibrated threshold (or eval_cam.threshold's number).
    "eval-pseudo": StageSpec(("make-cam", "eval-cam", "make-pseudo"), ("data", "eval_cam", "eval_pseudo")),
    # train-seg starts from stage 1's backbone when no ImageNet weights are given (backbone_init auto).
    "train-seg": StageSpec(("train-cam", "make-pseudo"), ("seed", "data", "model", "train_seg")),
    "eval-seg": StageSpec(("train-seg",), ("data", "eval_seg")),
}

# The stages that only score against ground truth, and the split each scores: `rpnet run` skips one, with a
# one-line note, when its split has no masks (a user's own photos), and no other stage reads their outputs.
# eval-seg is not one of them: without masks it still writes the model's predictions for its split.
EVAL_SPLITS: dict[str, Callable[[Config], str]] = {
    "eval-cam": lambda cfg: cfg.eval_cam.split or cfg.data.train_split,
    "eval-pseudo": lambda cfg: cfg.eval_pseudo.split or cfg.data.train_split,
}

# Keys that change how fast or where a stage runs, not what it writes: a change reruns nothing.
# (``device``: a run continued on another machine should not retrain; CPU and GPU results
# differ only in rounding.)
RUNTIME_KEYS = frozenset({
    "work_dir", "device", "engine", "data.num_workers", "ir_label.workers", "make_cam.batch_size",
    "train_cam.log_every", "train_irn.log_every", "train_seg.log_every",
})


def stage_order() -> list[str]:
    """The pipeline's stage names in order: the keys of :data:`rpnet.cli.STAGES`, as they are now."""
    from .. import cli

    return list(cli.STAGES)


def stage_spec(name: str, order: list[str] | None = None) -> StageSpec:
    """The dependencies of stage ``name``; for a stage :data:`GRAPH` lacks, every section and earlier stage."""
    order = stage_order() if order is None else order
    check_stage(name, order)
    spec = GRAPH.get(name)
    if spec is None:
        return StageSpec(tuple(order[:order.index(name)]), tuple(Config.__dataclass_fields__))
    return StageSpec(tuple(u for u in spec.upstream if u in order), spec.sections)


def check_stage(name: str, order: list[str]) -> None:
    """A :class:`ConfigError` listing the stages when ``name`` is not one of them."""
    if name not in order:
        raise ConfigError(f"unknown stage {name!r}; choose from {', '.join(order)}")


def stage_module(name: str) -> ModuleType:
    """The module that runs stage ``name`` (``run(cfg, *, resume)``); STAGES may hold a module or its path."""
    from .. import cli

    check_stage(name, list(cli.STAGES))
    entry = cli.STAGES[name]
    return importlib.import_module(entry) if isinstance(entry, str) else entry


def stage_folder(name: str) -> str:
    """The folder stage ``name`` writes under the work dir: its module's ``STAGE_DIR`` (``train_cam`` ...)."""
    return getattr(stage_module(name), "STAGE_DIR", name.replace("-", "_"))
