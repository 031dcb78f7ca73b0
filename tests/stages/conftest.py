"""Fixtures shared by the stage tests."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from rpnet.data.build import build_dataset
from rpnet.io import save_npz
from rpnet.models.backbones import build_backbone
from rpnet.models.build import CLASSIFIER_BACKBONE_PREFIX
from rpnet.layout import WorkDir


@pytest.fixture
def write_classifier():
    """Write stage 1's weights file for a config: a random backbone under CLASSIFIER_BACKBONE_PREFIX and a
    6-class head; returns the tensors written."""
    def write(cfg, seed=1):
        torch.manual_seed(seed)
        backbone = build_backbone(cfg.model.backbone, output_stride=cfg.model.output_stride)
        tensors = {f"{CLASSIFIER_BACKBONE_PREFIX}{k}": v.contiguous() for k, v in backbone.state_dict().items()}
        tensors["classifier.weight"] = torch.randn(6, backbone.channels["block4"], 1, 1)
        path = WorkDir(cfg.work_dir).weights("train-cam")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path))
        return tensors
    return write


@pytest.fixture
def write_three_level_cams():
    """Write CAM files with three values over the split: 0 off the objects, 0.3 and 0.9 on alternate
    rows of each tagged class's ground-truth pixels (what the calibration tests split)."""
    def write(cfg):
        data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
        for i, rec in enumerate(data.records):
            mask = data[i]["mask"]
            keys = np.array(sorted(rec.tags))
            level = np.where(np.arange(mask.shape[0])[:, None] % 2 == 0, 0.3, 0.9)
            high = np.stack([(mask == k + 1) * level for k in keys]).astype(np.float16)
            save_npz(WorkDir(cfg.work_dir).cams / f"{rec.id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)
    return write
