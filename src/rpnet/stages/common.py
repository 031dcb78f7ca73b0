"""What every stage does first: its folder in the work dir, with the resolved config inside."""

from __future__ import annotations

from pathlib import Path

from ..config import Config, save_config


def stage_dir(cfg: Config, name: str) -> Path:
    """``WORK_DIR/<name>/``, created, with ``config.yaml`` (the config this stage ran with) written into it."""
    out = Path(cfg.work_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return out
