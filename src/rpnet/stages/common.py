"""What every stage does first: its folder in the work dir, with the resolved config inside."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, save_config
from ..data.build import build_dataset
from ..data.dataset import TaggedImages
from ..errors import DataError


def stage_dir(cfg: Config, name: str) -> Path:
    """``WORK_DIR/<name>/``, created, with ``config.yaml`` (the config this stage ran with) written into it."""
    out = Path(cfg.work_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return out


def scored_dataset(cfg: Config, split: str, what: str) -> TaggedImages:
    """The images of ``split`` with their ground-truth masks, for scoring ``what``; an error without masks."""
    dataset = build_dataset(cfg.data, split, masks=True)
    if not dataset.has_masks:
        raise DataError(f"split {split!r} of {cfg.data.root} has no masks to score {what} against")
    return dataset
