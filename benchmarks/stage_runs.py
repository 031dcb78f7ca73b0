"""Stages 4-7 in a scratch work dir that starts from another work dir's CAMs (used by the IRN benchmarks).

Not a benchmark itself: :func:`start_from_cams` makes the work dir, :func:`run_stages` runs stages
in it and times them. The source work dir is only read.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rpnet.config import Config
from rpnet.engine.trainer import WEIGHTS_NAME
from rpnet.pipeline.graph import stage_module
from rpnet.stages.make_cam import cam_dir
from rpnet.stages.train_cam import STAGE_DIR as TRAIN_CAM_DIR


def start_from_cams(source: Config, cfg: Config) -> None:
    """Replace ``cfg.work_dir`` by a work dir holding ``source``'s CAMs (make-cam) and ``metrics.json``.

    The classifier's weights come too where ``source`` has them: train-irn may start from them
    (``train_irn.backbone_init``).
    """
    if Path(source.work_dir).resolve().is_relative_to(Path(cfg.work_dir).resolve()):
        raise ValueError(f"{cfg.work_dir} holds the source work dir {source.work_dir}: it would be overwritten")
    shutil.rmtree(cfg.work_dir, ignore_errors=True)
    shutil.copytree(cam_dir(source.work_dir), cam_dir(cfg.work_dir))
    for name in ("metrics.json", f"{TRAIN_CAM_DIR}/{WEIGHTS_NAME}"):
        path = Path(source.work_dir) / name
        if path.exists():
            (Path(cfg.work_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(cfg.work_dir) / name)


def run_stages(cfg: Config, names: list[str]) -> dict[str, float]:
    """Run the named stages (``rpnet <name>``) in order on ``cfg``; return the seconds each took, by name."""
    times = {}
    for name in names:
        start = time.perf_counter()
        stage_module(name).run(cfg)
        times[name] = time.perf_counter() - start
    return times
