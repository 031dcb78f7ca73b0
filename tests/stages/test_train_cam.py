"""train-cam end to end on a tiny synthetic set: outputs, determinism, the baseline switch."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rpnet.config import load_config
from rpnet.errors import ConfigError
from rpnet.io import read_jsonl
from rpnet.models.backbones import build_backbone
from rpnet.stages import train_cam
from rpnet.models.build import build_classifier


def test_writes_weights_log_and_resolved_config(tiny_cfg):
    cfg = tiny_cfg("train_cam.max_steps=2")
    weights = train_cam.run(cfg)
    out = weights.parent
    assert weights.name == "model.safetensors" and (out / "last.pt").exists()
    log = read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2] and {"l_c", "l_s", "lr", "images_per_s"} <= set(log[0])
    assert load_config(out / "config.yaml") == cfg
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["prototypes"] is True
    state = load_file(str(weights))
    assert "embeddings.block2.weight" in state and "classifier.weight" in state


def test_same_seed_same_weights_twice_on_cpu(tiny_cfg, tmp_path):
    a = load_file(str(train_cam.run(tiny_cfg("train_cam.max_steps=2", f"work_dir={tmp_path / 'a'}"))))
    b = load_file(str(train_cam.run(tiny_cfg("train_cam.max_steps=2", f"work_dir={tmp_path / 'b'}"))))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_baseline_has_no_prototype_module(tiny_cfg):
    weights = train_cam.run(tiny_cfg("train_cam.max_steps=1", "model.prototypes=false"))
    assert not any(k.startswith("embeddings.") for k in load_file(str(weights)))
    log = read_jsonl(weights.parent / "log.jsonl")
    assert log[-1]["l_s"] == 0.0


def _block_grads(model):
    """Which of block1-2 and block3 get a gradient from one classification loss."""
    model.train()
    model(torch.randn(2, 3, 64, 64)).logits.sum().backward()
    grad = lambda p: p.grad is not None and bool(p.grad.abs().sum() > 0)  # noqa: E731
    b = model.backbone
    return grad(b.layer1[0].conv1.weight), grad(b.layer2[0].conv1.weight), grad(b.layer3[0].conv1.weight)


def test_block2_is_trained_from_scratch_and_detached_with_imagenet_weights(tiny_cfg, tmp_path):
    # IRN detaches block1-2 because ImageNet trained them; from scratch nothing else would.
    scratch = tiny_cfg("model.prototypes=false")
    assert _block_grads(build_classifier(scratch.model, 6)) == (True, True, True)
    weights = tmp_path / "imagenet.pth"
    torch.save(build_backbone("resnet18").state_dict(), weights)
    pretrained = tiny_cfg("model.prototypes=false", f"model.pretrained={weights}")
    assert _block_grads(build_classifier(pretrained.model, 6)) == (False, False, True)
    forced = tiny_cfg("model.prototypes=false", "model.detach_block2=true")
    assert _block_grads(build_classifier(forced.model, 6)) == (False, False, True)


def test_check_refuses_missing_imagenet_weights_and_a_batch_the_data_cannot_fill(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match=f"model.pretrained {tmp_path / 'r50.pth'} not found.*'imagenet' to download.*or null"):
        train_cam.check(tiny_cfg(f"model.pretrained={tmp_path / 'r50.pth'}"))
    # 8 tagged images; a batch of 32 in groups of 2 draws 16 anchors
    with pytest.raises(ConfigError, match="needs at least 16 anchor images .* there are 8 training images"):
        train_cam.check(tiny_cfg("train_cam.batch_size=32"))
    train_cam.check(tiny_cfg("train_cam.batch_size=16"))  # 8 anchors: fits


def test_the_released_reading_trains_and_make_cam_reads_its_weights(tiny_cfg):
    """model.variant=released end to end: its extra modules are in the weights (block4's 1x1 reduction,
    the non-local blocks, the partner's classifier), no embedding convs, and make-cam loads them."""
    from rpnet.layout import WorkDir, load_cams
    from rpnet.stages import make_cam

    cfg = tiny_cfg("train_cam.max_steps=1", "model.variant=released", "model.reduce_dim=8")
    state = load_file(str(train_cam.run(cfg)))
    assert state["reduce.weight"].shape[:2] == (8, 512)  # resnet18's block4 (512) -> reduce_dim
    assert any(k.startswith("non_local.") for k in state) and any(k.startswith("partner_classifiers.") for k in state)
    assert not any(k.startswith("embeddings.") for k in state)  # prototypes from the features themselves
    make_cam.run(cfg)
    cams = sorted(WorkDir(cfg.work_dir).cams.glob("*.npz"))
    assert cams and load_cams(cams[0]).high_res.max() <= 1.0
