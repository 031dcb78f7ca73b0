"""train-irn on a tiny synthetic set, with confident labels and classifier weights written by hand."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rpnet.config import load_config
from rpnet.data.build import build_dataset
from rpnet.data.transforms import eval_transform
from rpnet.engine.checkpoint import load_model_weights
from rpnet.errors import ConfigError, RpnetError
from rpnet.io import read_jsonl, save_mask
from rpnet.stages import train_irn
from rpnet.layout import WorkDir
from rpnet.models.build import build_irn

FAST = ("train_irn.batch_size=4", "train_irn.crop_size=64", "train_irn.path_radius=3", "train_irn.log_every=1",
        "train_irn.backbone_init=auto")  # auto: the classifier here (the synthetic config starts from scratch)


def write_labels(cfg):
    """Confident labels = the ground truth (255 borders stay unsure)."""
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    for i, rec in enumerate(data.records):
        save_mask(WorkDir(cfg.work_dir).ir_labels / f"{rec.id}.png", data[i]["mask"])


def test_two_steps_write_weights_log_and_config(tiny_cfg, write_classifier):
    cfg = tiny_cfg(*FAST, "train_irn.max_steps=2", "train_irn.train_backbone=false")  # IRN's default
    write_labels(cfg)
    classifier = write_classifier(cfg)
    weights = train_irn.run(cfg)
    out = weights.parent
    assert weights.name == "model.safetensors" and (out / "last.pt").exists()
    assert load_config(out / "config.yaml") == cfg
    log = read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2]
    assert {"loss", "bg_pos", "fg_pos", "neg", "disp_fg", "disp_bg", "lr"} <= set(log[0])
    assert all(np.isfinite(r["loss"]) for r in log)
    state = load_file(str(weights))
    # the frozen backbone is the classifier's, untouched by training
    for key, value in classifier.items():
        if key.startswith("backbone."):
            assert torch.equal(state[key], value), key
    assert "edge_out.weight" in state and "disp_out.weight" in state


def test_train_backbone_trains_the_backbone_but_not_its_stem(tiny_cfg, write_classifier):
    cfg = tiny_cfg(*FAST, "train_irn.max_steps=1", "train_irn.train_backbone=true")
    write_labels(cfg)
    classifier = write_classifier(cfg)
    state = load_file(str(train_irn.run(cfg)))
    assert torch.equal(state["backbone.conv1.weight"], classifier["backbone.conv1.weight"])  # the stem stays
    assert torch.equal(state["backbone.bn1.weight"], classifier["backbone.bn1.weight"])
    for key in ("backbone.layer1.0.conv1.weight", "backbone.layer4.0.conv2.weight"):
        assert not torch.equal(state[key], classifier[key]), key
    # running statistics are not updated (frozen batch norm), only the affine parameters learn
    for key in ("backbone.layer2.0.bn1.running_mean", "backbone.layer2.0.bn1.running_var"):
        assert torch.equal(state[key], classifier[key]), key


def test_displacement_mean_centres_the_field(tiny_cfg, write_classifier):
    # the saved mean is the mean field over the training images, so in eval mode (mean
    # subtracted) the field averages to zero over those images (64 px images = the whole crop)
    cfg = tiny_cfg(*FAST, "train_irn.max_steps=1")
    write_labels(cfg)
    write_classifier(cfg)
    net = load_model_weights(train_irn.run(cfg), build_irn(cfg.model)).eval()
    assert net.displacement_mean.abs().sum() > 0
    images = build_dataset(cfg.data, cfg.data.train_split, eval_transform())
    with torch.no_grad():
        field = net(torch.stack([images[i]["image"] for i in range(len(images))])).displacement
    torch.testing.assert_close(field.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-4, rtol=0)


def test_resume_continues_from_the_checkpoint(tiny_cfg, write_classifier):
    cfg = tiny_cfg(*FAST, "train_irn.max_steps=2")
    write_labels(cfg)
    write_classifier(cfg)
    train_irn.run(cfg)
    train_irn.run(tiny_cfg(*FAST, "train_irn.max_steps=4"), resume=True)
    log = read_jsonl(cfg.work_dir / "train_irn" / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert [r["epoch"] for r in log] == [0, 0, 1, 1]  # 8 images in batches of 4: 2 steps an epoch


def test_scratch_backbone_needs_no_classifier(tiny_cfg):
    cfg = tiny_cfg(*FAST, "train_irn.max_steps=1", "train_irn.train_backbone=true", "train_irn.backbone_init=scratch",
                   "train_irn.boundary_prior=0.05")
    write_labels(cfg)  # and no train_cam/ weights at all
    state = load_file(str(train_irn.run(cfg)))
    # one step at the config's lr 0.05 (x1 for the boundary branch) moves the bias little from logit(0.05) = -2.944
    assert state["edge_out.bias"].item() == pytest.approx(-2.944, abs=0.5)


def test_missing_inputs_are_clear_errors(tiny_cfg):
    cfg = tiny_cfg(*FAST)
    with pytest.raises(RpnetError, match="run make-ir-label first"):
        train_irn.run(cfg)
    write_labels(cfg)
    with pytest.raises(RpnetError, match="run train-cam first"):
        train_irn.run(cfg)
    with pytest.raises(ConfigError, match="model.pretrained is null"):
        train_irn.run(tiny_cfg(*FAST, "train_irn.backbone_init=pretrained"))
    with pytest.raises(ConfigError, match="batch_size 16 needs at least 16 images"):
        train_irn.run(tiny_cfg(*FAST, "train_irn.batch_size=16"))


def test_a_classifier_of_another_backbone_is_refused(tiny_cfg, write_classifier):
    cfg = tiny_cfg(*FAST)
    write_labels(cfg)
    write_classifier(cfg)
    with pytest.raises(ConfigError, match="does not fit a resnet34"):
        train_irn.run(tiny_cfg(*FAST, "model.backbone=resnet34"))
