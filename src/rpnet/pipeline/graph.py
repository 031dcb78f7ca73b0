"""The pipeline's dependency graph, read from the stage declarations (:data:`rpnet.stages.STAGES`):
the order, each stage's upstream stages and config sections, and the keys no fingerprint covers.

``tests/pipeline/test_graph.py`` checks, by reading each stage module's source, that a stage reads
no config section besides those its declaration lists.
"""

from __future__ import annotations

import dataclasses

from .. import stages
from ..config import Config
from ..errors import ConfigError
from ..stages import Stage


def scored_split(cfg: Config, name: str) -> str | None:
    """For a stage that only scores against ground truth (``Stage.scores``), the split it scores;
    None for every other stage. ``rpnet run`` skips such a stage, with a one-line note, when that
    split has no masks (a user's own photos); no other stage reads its outputs."""
    section = stages.stage(name).scores
    return None if section is None else (getattr(cfg, section).split or cfg.data.train_split)


def scoring_stages() -> list[str]:
    """The stages that only score against ground truth, in pipeline order."""
    return [s.name for s in stages.STAGES if s.scores is not None]


# Keys that change how fast or where a stage runs, not what it writes: a change reruns nothing.
# (``device``: a run continued on another machine should not retrain; CPU and GPU results
# differ only in rounding.)
RUNTIME_KEYS = frozenset({
    "work_dir", "device", "engine", "data.num_workers", "ir_label.workers", "make_cam.batch_size",
    "train_cam.log_every", "train_irn.log_every", "train_seg.log_every",
})


def stage_order() -> list[str]:
    """The pipeline's stage names in order (:data:`rpnet.stages.STAGES`)."""
    return stages.names()


def stage_spec(name: str, order: list[str] | None = None) -> Stage:
    """The declaration of stage ``name``, its upstream limited to the stages of ``order`` (a test may
    run part of the pipeline)."""
    spec = stages.stage(name)
    if order is None:
        return spec
    check_stage(name, order)
    return dataclasses.replace(spec, upstream=tuple(u for u in spec.upstream if u in order))


def check_stage(name: str, order: list[str]) -> None:
    """A :class:`ConfigError` listing the stages when ``name`` is not one of them."""
    if name not in order:
        raise ConfigError(f"unknown stage {name!r}; choose from {', '.join(order)}")
