"""Fixtures shared by the stage tests."""

import pytest
import torch
from safetensors.torch import save_file

from rpnet.models.backbones import build_backbone
from rpnet.stages.train_cam import CLASSIFIER_BACKBONE_PREFIX


@pytest.fixture
def write_classifier():
    """Write stage 1's weights file for a config: a random backbone under CLASSIFIER_BACKBONE_PREFIX and a
    6-class head; returns the tensors written."""
    def write(cfg, seed=1):
        torch.manual_seed(seed)
        backbone = build_backbone(cfg.model.backbone, output_stride=cfg.model.output_stride)
        tensors = {f"{CLASSIFIER_BACKBONE_PREFIX}{k}": v.contiguous() for k, v in backbone.state_dict().items()}
        tensors["classifier.weight"] = torch.randn(6, backbone.channels["block4"], 1, 1)
        path = cfg.work_dir / "train_cam" / "model.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path))
        return tensors
    return write
