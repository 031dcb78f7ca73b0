"""train-seg on the tiny synthetic set: ground-truth and fabricated pseudo masks, resume, backbone start."""

import json

import numpy as np
import pytest
import torch

from rpnet.config import load_config
from rpnet.data.build import build_dataset
from rpnet.errors import RpnetError
from rpnet.io import read_jsonl, save_mask
from rpnet.losses import segmentation_loss
from rpnet.predict import read_spec
from rpnet.stages import train_seg
from rpnet.layout import WorkDir
from rpnet.models.build import build_seg_model

FAST = ("train_seg.batch_size=4", "train_seg.crop_size=64", "train_seg.output_stride=16", "train_seg.log_every=1",
        "train_seg.backbone_init=scratch", "train_seg.val_every=0")


def write_pseudo_masks(cfg, label):
    """make-pseudo's output, fabricated: every training image's mask filled with ``label``."""
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    for i, rec in enumerate(data.records):
        save_mask(WorkDir(cfg.work_dir).pseudo_masks / f"{rec.id}.png", np.full(data[i]["mask"].shape, label, np.uint8))


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_cfg):
    cfg = tiny_cfg(*FAST, "train_seg.lr=0.001")
    torch.manual_seed(0)
    net = build_seg_model(cfg.train_seg, cfg.model, 3, "scratch", WorkDir(cfg.work_dir).weights("train-cam"))
    optimizer = train_seg.make_optimizer(net, cfg)
    images = torch.randn(2, 3, 32, 32)
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, :, 16:] = 1  # right half class 1, left half background; class 2 never occurs
    target[:, :4] = 255

    def loss_now():
        torch.manual_seed(1)  # the same dropout masks for both measurements
        with torch.no_grad():
            return segmentation_loss(net(images), target).item()

    before = loss_now()
    for _ in range(8):
        loss = segmentation_loss(net(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_now() < 0.5 * before


def test_gt_labels_write_weights_with_metadata_log_and_resume(tiny_cfg, umask_022):
    cfg = tiny_cfg(*FAST, "train_seg.labels=gt", "train_seg.max_steps=2", "train_seg.architecture=deeplab_largefov")
    weights = train_seg.run(cfg)
    out = weights.parent
    assert weights == cfg.work_dir / "train_seg" / "model.safetensors" and (out / "last.pt").is_file()
    assert weights.stat().st_mode & 0o777 == 0o644  # the file users copy and share
    assert load_config(out / "config.yaml") == cfg
    log = read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    spec = read_spec(weights)
    names = build_dataset(cfg.data, "train").class_names
    assert (spec.architecture, spec.backbone, spec.output_stride, spec.class_names) == \
        ("deeplab_largefov", "resnet18", 16, names)

    train_seg.run(tiny_cfg(*FAST, "train_seg.labels=gt", "train_seg.max_steps=3", "train_seg.architecture=deeplab_largefov"),
                  resume=True)
    assert [r["step"] for r in read_jsonl(out / "log.jsonl")] == [1, 2, 3]  # continued, not restarted


def test_pseudo_labels_come_from_make_pseudo(tiny_cfg):
    cfg = tiny_cfg(*FAST, "train_seg.max_steps=1")
    with pytest.raises(RpnetError, match="make-pseudo"):
        train_seg.run(cfg)
    # All-ignore pseudo masks: not one labelled pixel, so the loss is exactly 0 (the ground truth would not be).
    write_pseudo_masks(cfg, 255)
    train_seg.run(cfg)
    assert [r["loss"] for r in read_jsonl(cfg.work_dir / "train_seg" / "log.jsonl")] == [0.0]


def test_backbone_init_auto_and_classifier(tiny_cfg, write_classifier):
    cfg = tiny_cfg(*FAST, "train_seg.backbone_init=auto")
    assert train_seg.resolve_init(cfg) == "scratch"  # no ImageNet weights, no stage 1 yet
    classifier = write_classifier(cfg)
    assert train_seg.resolve_init(cfg) == "classifier"
    assert train_seg.resolve_init(tiny_cfg(*FAST, "train_seg.backbone_init=auto", "model.pretrained=x.pth")) \
        == "pretrained"
    net = build_seg_model(cfg.train_seg, cfg.model, 7, "classifier", WorkDir(cfg.work_dir).weights("train-cam"))
    for key, value in net.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, classifier[f"backbone.{key}"]), key


def test_validation_logs_val_miou_keeps_the_best_epoch_and_changes_no_weight(tiny_cfg):
    # 8 training images in batches of 4: 2 steps per epoch; validation after epochs 2 and 3 (the last)
    settings = (*FAST, "train_seg.labels=gt", "train_seg.epochs=3")  # validated on data.eval_split, val
    plain = train_seg.run(tiny_cfg(*settings, "work_dir=" + str(tiny_cfg().work_dir.parent / "plain")))
    cfg = tiny_cfg(*settings, "train_seg.val_every=2")
    weights = train_seg.run(cfg)
    checks = [r for r in read_jsonl(weights.parent / "log.jsonl") if "val_miou" in r]
    assert [(r["epoch"], r["step"]) for r in checks] == [(1, 4), (2, 6)]
    assert all(0 <= r["val_miou"] <= 100 for r in checks)
    work = WorkDir(cfg.work_dir)
    best, last = work.seg_best_weights, work.seg_last_weights
    assert best.is_file() and read_spec(best) == read_spec(weights)
    assert weights.read_bytes() == best.read_bytes()  # train_seg.keep: best (the default)
    assert last.read_bytes() == plain.read_bytes()  # validating changed nothing in training
    assert plain.read_bytes() == (plain.parent / "last.safetensors").read_bytes()  # no validation: the last
    peak = max(checks, key=lambda r: (r["val_miou"], -r["epoch"]))
    metrics = json.loads(work.metrics.read_text())
    assert metrics == {"seg_epochs": 3, "seg_val_peak": peak["val_miou"], "seg_val_peak_epoch": peak["epoch"] + 1,
                       "seg_val_last": checks[1]["val_miou"], "seg_model_epoch": peak["epoch"] + 1}
    kept_last = train_seg.run(tiny_cfg(*settings, "train_seg.val_every=2", "train_seg.keep=last",
                                       "work_dir=" + str(tiny_cfg().work_dir.parent / "kept_last")))
    assert kept_last.read_bytes() == plain.read_bytes()


def test_the_validation_curve_in_brief_by_hand():
    log = [{"epoch": 0, "step": 1, "loss": 2.0}, {"epoch": 0, "step": 2, "val_miou": 10.0},
           {"epoch": 1, "step": 4, "val_miou": 14.3}, {"epoch": 2, "step": 6, "val_miou": 14.3},
           {"epoch": 3, "step": 8, "val_miou": 5.9}]
    assert train_seg.curve_metrics(log, 4) == {"seg_epochs": 4, "seg_val_peak": 14.3, "seg_val_peak_epoch": 2,
                                               "seg_val_last": 5.9}
    assert train_seg.curve_metrics(log[:1], 4) == {"seg_epochs": 4}


def test_no_validation_without_masks_or_when_off(tiny_cfg, tmp_path):
    cfg = tiny_cfg(*FAST, "train_seg.labels=gt", "train_seg.epochs=1")
    net = build_seg_model(cfg.train_seg, cfg.model, 6, "scratch", WorkDir(cfg.work_dir).weights("train-cam"))
    assert train_seg.validation(cfg, net, None, torch.device("cpu"), tmp_path) is None  # val_every=0
    empty = tmp_path / "nomasks"
    import shutil
    shutil.copytree(cfg.data.root, empty)
    shutil.rmtree(empty / "SegmentationClass")
    on = tiny_cfg(*FAST, "train_seg.val_every=1", f"data.root={empty}")
    assert train_seg.validation(on, net, None, torch.device("cpu"), tmp_path) is None
