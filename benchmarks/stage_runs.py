"""Stages 4-7 in a scratch work dir that starts from another work dir's CAMs (used by the IRN benchmarks).

Not a benchmark itself: :func:`start_from_cams` makes the work dir, :func:`run_stages` runs stages
in it and times them. The source work dir is only read.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rpnet.config import Config
from rpnet import stages
from rpnet.layout import WorkDir


def start_from_cams(source: Config, cfg: Config) -> None:
    """Replace ``cfg.work_dir`` by a work dir holding ``source``'s CAMs (make-cam) and ``metrics.json``.

    The classifier's weights come too where ``source`` has them: train-irn may start from them
    (``train_irn.backbone_init``).
    """
    if Path(source.work_dir).resolve().is_relative_to(Path(cfg.work_dir).resolve()):
        raise ValueError(f"{cfg.work_dir} holds the source work dir {source.work_dir}: it would be overwritten")
    shutil.rmtree(cfg.work_dir, ignore_errors=True)
    src, dst = WorkDir(source.work_dir), WorkDir(cfg.work_dir)
    shutil.copytree(src.cams, dst.cams)
    for path, target in ((src.metrics, dst.metrics), (src.weights("train-cam"), dst.weights("train-cam"))):
        if path.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


def run_stages(cfg: Config, names: list[str]) -> dict[str, float]:
    """Run the named stages (``rpnet <name>``) in order on ``cfg``; return the seconds each took, by name."""
    times = {}
    for name in names:
        start = time.perf_counter()
        stages.load(name).run(cfg)
        times[name] = time.perf_counter() - start
    return times
