"""Shared fixtures: a tiny synthetic dataset written once per test session, the usual umask."""

import os
from pathlib import Path

import pytest

from rpnet.config import load_config
from rpnet.data.synthetic import generate

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
TINY = dict(n_train=8, n_val=4, size=64, seed=0)


@pytest.fixture
def umask_022():
    """The process umask set to 022 for one test, as on most systems: new files should be 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory) -> Path:
    """A synthetic VOC-layout dataset: 8 train and 4 val images of 64 px."""
    return generate(tmp_path_factory.mktemp("tiny_voc"), **TINY)


@pytest.fixture
def tiny_cfg(tiny_voc, tmp_path):
    """configs/synthetic.yaml shrunk to seconds: resnet18, 64 px crops, 2 steps."""
    def make(*overrides: str):
        return load_config(CONFIG, [
            f"data.root={tiny_voc}", f"work_dir={tmp_path / 'work'}", "device=cpu",
            "train_cam.epochs=1", "train_cam.batch_size=4", "train_cam.crop_size=64",
            "train_cam.resize_long=[56, 72]", "train_cam.log_every=1", "make_cam.scales=[1.0, 0.5]",
            *overrides,
        ])
    return make
