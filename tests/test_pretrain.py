"""``rpnet pretrain``: a backbone trained on the other classes, written in the key layout that
``model.pretrained`` loads."""

import json

import pytest
import torch

from rpnet.cli import main
from rpnet.config import load_config
from rpnet.data.synthetic import PRETRAIN_CLASSES
from rpnet.errors import RpnetError
from rpnet.layout import WorkDir
from rpnet.models.backbones.resnet import FrozenBatchNorm2d
from rpnet.models.build import build_classifier
from rpnet.models.weights import read_weights, save_safetensors
from rpnet.pretrain import BACKBONE_FILE, backbone_state, pretrain_backbone

from rpnet.demo import synthetic_config

TINY = ["train_cam.epochs=1", "train_cam.max_steps=2", "train_cam.batch_size=4", "train_cam.crop_size=64",
        "train_cam.resize_long=[56, 72]", "device=cpu"]


def test_backbone_state_keeps_the_backbone_without_its_prefix_and_drops_the_head(tmp_path):
    weights = tmp_path / "model.safetensors"
    save_safetensors(weights, {"backbone.conv1.weight": torch.ones(2, 3, 1, 1),
                               "backbone.bn1.running_mean": torch.arange(2.0),
                               "classifier.weight": torch.zeros(6, 2, 1, 1)})
    state = backbone_state(weights)
    assert sorted(state) == ["bn1.running_mean", "conv1.weight"]
    assert state["bn1.running_mean"].tolist() == [0.0, 1.0]
    save_safetensors(tmp_path / "head.safetensors", {"classifier.weight": torch.zeros(6, 2, 1, 1)})
    with pytest.raises(RpnetError, match="no 'backbone.\\*' tensors"):
        backbone_state(tmp_path / "head.safetensors")


def test_pretrain_writes_a_backbone_that_model_pretrained_loads(tmp_path, capsys):
    out = tmp_path / "pre"
    target = pretrain_backbone(out, n_train=8, size=64, overrides=TINY)
    assert target == out / BACKBONE_FILE
    # trained on the other classes
    classes = json.loads((out / "data" / "synth.json").read_text())["classes"]
    assert classes[1:] == [style.name for style in PRETRAIN_CLASSES]
    # the file is the classifier's backbone, in torchvision's names (no head, no prefix)
    classifier = read_weights(WorkDir(out / "work").weights("train-cam"))
    state = read_weights(target)
    assert "conv1.weight" in state and "layer4.1.bn2.running_var" in state
    assert not any(k.startswith(("backbone.", "fc.", "classifier")) for k in state)
    assert set(state) == {k.removeprefix("backbone.") for k in classifier if k.startswith("backbone.")}
    # loaded as ImageNet weights are, for a dataset of another class count: same tensors, batch norm frozen
    cfg = load_config(synthetic_config(), [f"model.pretrained={target}"])
    model = build_classifier(cfg.model, num_classes=6)
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    assert not any(p.requires_grad for p in model.backbone.conv1.parameters())
    # a rerun reuses the data and the finished training: the same bytes
    before = target.read_bytes()
    pretrain_backbone(out, n_train=8, size=64, overrides=TINY)
    assert target.read_bytes() == before
    assert "model.pretrained=" in capsys.readouterr().out


def test_cli_pretrain_parses_and_runs(tmp_path, capsys):
    code = main(["pretrain", str(tmp_path / "p"), "--n-train", "8", "--size", "64",
                 *[item for o in TINY for item in ("--set", o)]])
    assert code == 0 and (tmp_path / "p" / BACKBONE_FILE).is_file()
