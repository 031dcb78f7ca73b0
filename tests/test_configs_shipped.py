"""Every config and sweep shipped under configs/ loads, and every sweep row builds a valid config."""

import dataclasses
from importlib import resources
from pathlib import Path

import pytest
import yaml

from rpnet.config import dump_config, load_config
from rpnet.stages import names
from rpnet.sweep import load_sweep, plan_sweep

CONFIGS = Path(str(resources.files("rpnet") / "configs"))
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
SWEEP_FILES = sorted((CONFIGS / "sweeps").glob("*.yaml"))
PAPER_TABLES = {"table2_fraction", "table3_backbone", "table4_levels", "table5_beta", "table6_gaussian",
                "table7_group_size"}


def test_the_papers_experiments_are_shipped():
    assert {"synthetic.yaml", "voc.yaml", "coco.yaml"} <= {p.name for p in CONFIG_FILES}
    assert PAPER_TABLES <= {p.stem for p in SWEEP_FILES}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_loads_and_sets_every_key_it_names(path):
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert cfg.work_dir == Path(raw["work_dir"]) and cfg.model.backbone == raw["model"]["backbone"]


def test_paper_configs_use_the_papers_settings():
    voc = load_config(CONFIGS / "voc.yaml")
    assert (voc.data.train_split, voc.model.backbone, voc.model.beta, voc.model.sigma) == ("train_aug", "resnet50", 0.5, 3.0)
    assert (voc.train_cam.epochs, voc.train_cam.batch_size, voc.train_cam.lr) == (5, 16, 0.02)
    assert voc.train_cam.momentum == 1e-4 and str(voc.model.pretrained) == "imagenet" and voc.data.sbd_root is not None


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if p.name != "synthetic.yaml"], ids=lambda p: p.name)
def test_without_imagenet_weights_every_shipped_config_takes_the_from_scratch_schedule(path):
    cfg = load_config(path, ["model.pretrained=null"])
    assert (cfg.train_cam.epochs, cfg.train_cam.lr, cfg.train_cam.momentum) == (15, 0.01, 0.9)
    assert cfg.model.freeze_bn is None and cfg.model.freeze_stem is None and cfg.model.detach_block2 is None
    coco = load_config(CONFIGS / "coco.yaml")
    assert coco.data.format == "coco" and coco.data.train_split == "train2014"


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_rows_build_valid_configs_that_differ(path, tmp_path):
    sweep = load_sweep(path)
    assert sweep.until is None or sweep.until in names()
    cells = plan_sweep(sweep, tmp_path)
    assert len(cells) == len(sweep.rows) * max(1, len(sweep.columns))
    experiments = {dump_config(dataclasses.replace(c.config, work_dir=Path("same"))) for c in cells}
    assert len(experiments) == len(cells)  # no two runs of a sweep are the same experiment
    assert len({c.work_dir for c in cells}) == len(cells)
    assert all(row.paper for row in sweep.rows)  # each row carries the paper's numbers to compare with
