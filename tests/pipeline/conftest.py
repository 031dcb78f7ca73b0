"""A fake pipeline for the runner's tests: the real stage names and graph, stages that take milliseconds.

Each fake stage writes ``ITEMS`` files into its folder, one at a time, skipping those that
exist (as the real per-image stages do), each holding the config sections the stage reads
and its upstream stages' outputs, so that an output is wrong when made from stale inputs.
The eval stages add a metric. ``calls`` records (stage, resume) per call; ``kill[stage] = n``
makes a stage raise after writing ``n`` files, once.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from rpnet import stages
from rpnet.config import load_config, to_dict
from rpnet.errors import OutputError
from rpnet.io import atomic_write_text
from rpnet.layout import WorkDir, update_metrics
from rpnet.pipeline.fingerprint import declared_value
from rpnet.stages.common import stage_dir

ITEMS = 4
FAKE_ORDER = ("train-cam", "make-cam", "eval-cam", "make-ir-label", "train-irn", "make-pseudo", "eval-pseudo")
# metric -> (the stage that adds it, the config value it reports)
FAKE_METRICS = {"eval-cam": ("cam_miou", lambda cfg: cfg.eval_cam.threshold * 100),
                "eval-pseudo": ("pseudo_miou", lambda cfg: cfg.pseudo.bg_threshold * 100)}


class Killed(RuntimeError):
    """What a fake stage raises half-way (a stand-in for a crash or a kill)."""


def read_item(path: Path) -> str:
    """An upstream stage's item, as a real stage reads an output: missing or unreadable is an OutputError."""
    if not path.is_file() or path.read_text() == CORRUPT:
        raise OutputError(f"{path} is unreadable", path)
    return path.read_text()


CORRUPT = "corrupt"  # an item file's contents that read_item refuses


class FakePipeline:
    ORDER = FAKE_ORDER
    Killed = Killed
    CORRUPT = CORRUPT

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.kill: dict[str, int] = {}
        self.modules = {name: self.module(name) for name in FAKE_ORDER}  # what rpnet.stages.load gives

    def module(self, name: str) -> types.ModuleType:
        module = types.ModuleType(f"fake_{name}")
        module.run = lambda cfg, *, resume=False: self.run(name, cfg, resume)
        return module

    def run(self, name: str, cfg, resume: bool) -> Path:
        self.calls.append((name, resume))
        out = stage_dir(cfg, name)
        raw = to_dict(cfg)
        spec = stages.stage(name)
        upstream = [read_item(WorkDir(cfg.work_dir).stage(u) / "item0.txt") for u in spec.upstream]
        content = json.dumps({"stage": name, "sections": {s: declared_value(raw, s) for s in spec.sections},
                              "upstream": upstream}, sort_keys=True)
        for i in range(ITEMS):
            if self.kill.get(name) == i:
                del self.kill[name]
                raise Killed(f"{name} killed after {i} items")
            if not (out / f"item{i}.txt").exists():
                atomic_write_text(out / f"item{i}.txt", content)
        if name in FAKE_METRICS:
            key, value = FAKE_METRICS[name]
            update_metrics(cfg.work_dir, **{key: value(cfg)})
        return out

    @staticmethod
    def outputs(work_dir: Path) -> dict[str, str]:
        """Every item file under a work dir (records and saved configs left out), by relative path."""
        return {p.relative_to(work_dir).as_posix(): p.read_text() for p in sorted(work_dir.rglob("item*.txt"))}

    def ran(self) -> list[str]:
        names = [name for name, _ in self.calls]
        self.calls.clear()
        return names


@pytest.fixture
def fake(monkeypatch) -> FakePipeline:
    """The real declarations of FAKE_ORDER's stages (rpnet.stages.STAGES), run by fake modules
    (``fake.modules``: a test may add a stage there and to the declarations)."""
    pipeline = FakePipeline()
    monkeypatch.setattr(stages, "STAGES", tuple(s for s in stages.STAGES if s.name in FAKE_ORDER))
    monkeypatch.setattr(stages, "load", lambda name: pipeline.modules[stages.stage(name).name])
    return pipeline


@pytest.fixture
def fake_cfg(tiny_voc, tmp_path):
    """A config over the tiny dataset; nothing in it is read by the fake stages except the keys they hash."""
    def make(*overrides: str, work: str = "work"):
        # numbers, not auto: the fake eval stages report them as their metrics
        return load_config(None, [f"data.root={tiny_voc}", f"work_dir={tmp_path / work}", "device=cpu",
                                  "eval_cam.threshold=0.15", "pseudo.bg_threshold=0.25", *overrides])
    return make

