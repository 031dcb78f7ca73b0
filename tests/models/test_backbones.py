"""Backbones: architecture against torchvision's published figures, strides, frozen norms."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from rpnet.errors import ConfigError
from rpnet.models.backbones import (
    BACKBONES,
    LEVELS,
    BackboneFeatures,
    FrozenBatchNorm2d,
    ResNet,
    build_backbone,
    level_strides,
)
from rpnet.models.weights import save_weights

# Parameter counts with the 1000-class head, as published in torchvision's model docs.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}
BOTTLENECK = {"resnet50", "resnet101", "resnext50_32x4d", "resnext101_32x8d",
              "wide_resnet50_2", "wide_resnet101_2"}
SIZE = 64


@functools.cache
def meta_model(name: str, output_stride: int = 16) -> ResNet:
    """The model, with its 1000-class head, as shapes without storage: no memory to fill."""
    with torch.device("meta"):
        return BACKBONES[name](num_classes=1000, output_stride=output_stride)


def test_registry_holds_the_eight_resnets_and_the_convnexts():
    assert sorted(BACKBONES) == sorted([*TORCHVISION_PARAMS, "convnext_tiny", "convnext_small", "convnext_base"])


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(name):
    model = meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


def test_key_names_and_shapes_checked_by_hand():
    r50 = {k: tuple(v.shape) for k, v in meta_model("resnet50").state_dict().items()}
    assert r50["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert r50["layer1.0.downsample.1.running_var"] == (256,)
    assert r50["layer3.5.conv3.weight"] == (1024, 256, 1, 1)
    assert r50["fc.weight"] == (1000, 2048)
    assert "layer3.6.conv1.weight" not in r50  # ResNet-50's layer3 has 6 blocks
    # 53 convs (stem, 16 blocks x 3, 4 projections), 53 batch norms x 5 entries, fc x 2.
    assert len(r50) == 53 + 53 * 5 + 2

    # ResNeXt-50 32x4d: inner width 4 * 32 = 128 in 32 groups of 4 input channels.
    assert meta_model("resnext50_32x4d").layer1[0].conv2.weight.shape == (128, 4, 3, 3)
    # ResNeXt-101 32x8d's last stage: width 512 * 8/64 * 32 = 2048, 64 channels per group.
    assert meta_model("resnext101_32x8d").layer4[0].conv2.weight.shape == (2048, 64, 3, 3)
    # Wide-ResNet-50-2: twice ResNet-50's inner width, same output width.
    wide = meta_model("wide_resnet50_2")
    assert wide.layer1[0].conv2.weight.shape == (128, 128, 3, 3)
    assert wide.layer1[0].conv3.weight.shape == (256, 128, 1, 1)

    r18 = meta_model("resnet18").state_dict()
    assert "layer1.0.downsample.0.weight" not in r18  # 64 -> 64, identity shortcut
    assert r18["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert r18["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert r18["fc.weight"].shape == (1000, 512)


def test_bottleneck_strides_on_the_3x3_conv():
    model = meta_model("resnet50")
    first = model.layer2[0]
    assert first.conv1.stride == (1, 1)
    assert first.conv2.stride == (2, 2)
    assert first.downsample[0].stride == (2, 2)


@pytest.mark.parametrize("output_stride, dilations", [
    # (layer3 first block, layer3 rest, layer4 first block, layer4 rest), as torchvision:
    # the first block of a dilated stage keeps the previous stage's dilation.
    (32, (1, 1, 1, 1)),
    (16, (1, 1, 1, 2)),
    (8, (1, 2, 2, 4)),
])
def test_dilations_follow_output_stride(output_stride, dilations):
    model = meta_model("resnet50", output_stride)
    got = (model.layer3[0].conv2.dilation[0], model.layer3[1].conv2.dilation[0],
           model.layer4[0].conv2.dilation[0], model.layer4[1].conv2.dilation[0])
    assert got == dilations
    assert model.output_stride == output_stride


def block4_support(name: str, output_stride: int, dilated: bool, size: int = 480) -> int:
    """How many input columns one block4 output near the centre reads: with every conv weight positive, an
    input of ones and identity batch norm every ReLU passes, so the gradient reaches exactly the
    receptive field. Max pooling passes a gradient to each window's maximum only, so the stem pools by
    average here: the same window, stride and padding."""
    net = build_backbone(name, output_stride=output_stride, norm="frozen", dilated=dilated)
    net.maxpool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1e-3)
    image = torch.ones(1, 3, size, size, requires_grad=True)
    block4 = net(image)[-1]
    centre = block4.shape[-1] // 2
    block4[0, :, centre, centre].sum().backward()
    read = torch.nonzero(image.grad[0].abs().sum((0, 1))).flatten()  # the columns the output reads
    return int(read.max() - read.min() + 1)


@pytest.mark.slow
@pytest.mark.parametrize("name, output_stride, dilated, field", [
    # Worked out by hand: r += (k - 1) * dilation * jump, jump *= stride, conv by conv. Both nets: the stem
    # (7x7 / 2, 3x3 max pool / 2) reads 11 pixels at jump 4. ResNet-18: layer1 43, layer2 99, layer3 211
    # (jump 16); layer4 at stride 2 (jump 32): 243, 307, 435; undilated at stride 1: 243, 275, 339;
    # dilated (the first block at dilation 1, the second at 2): 243, 275, 403.
    ("resnet18", 32, True, 435), ("resnet18", 16, False, 339), ("resnet18", 16, True, 403),
    # ResNet-50 (one 3x3 per bottleneck): layer1 35, layer2 91, layer3 267; layer4 at stride 2: 299, 363,
    # 427; undilated: 299, 331, 363; dilated: 299, 363, 427.
    ("resnet50", 32, True, 427), ("resnet50", 16, False, 363), ("resnet50", 16, True, 427),
])
def test_block4_receptive_field_dilated_or_undilated(name, output_stride, dilated, field):
    assert block4_support(name, output_stride, dilated) == field


def test_undilated_keeps_the_stride_and_the_weights():
    dilated, undilated = (build_backbone("resnet50", output_stride=16, dilated=d) for d in (True, False))
    assert undilated.layer4[1].conv2.dilation == (1, 1) and undilated.layer4[0].conv2.stride == (1, 1)
    assert {k: v.shape for k, v in undilated.state_dict().items()} == {k: v.shape for k, v in dilated.state_dict().items()}
    assert [f.shape[-1] for f in undilated(torch.empty(1, 3, SIZE, SIZE))] == list(SIZES_AT[16])


def _expected_channels(name: str) -> tuple[int, ...]:
    """Channels of the stem (64) and of layer1..layer4."""
    expansion = 4 if name in BOTTLENECK else 1
    return (64, *(expansion * planes for planes in (64, 128, 256, 512)))


def _check_block_shapes(model: ResNet, channels: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    feats = model(torch.empty(2, 3, SIZE, SIZE, device="meta"))
    assert isinstance(feats, BackboneFeatures)
    for feat, c, s in zip(feats, channels, sizes):
        assert tuple(feat.shape) == (2, c, s, s)


# Level sizes on a 64x64 input: stem and block1 H/4, H/8, then H/16 or H/8, then H/output_stride.
SIZES_AT = {32: (16, 16, 8, 4, 2), 16: (16, 16, 8, 4, 4), 8: (16, 16, 8, 8, 8)}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_block_shapes_and_channels(name):
    model = meta_model(name, output_stride=16)  # the method's default
    channels = _expected_channels(name)
    assert model.channels == dict(zip(BackboneFeatures._fields, channels))
    _check_block_shapes(model, channels, SIZES_AT[16])


# Strides and dilations are placed by the same code for every depth and width, so one
# backbone per kind of block covers the other two output strides (16 is tested above).
@pytest.mark.parametrize("output_stride", [32, 8])
@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])
def test_block_shapes_at_each_output_stride(name, output_stride):
    model = meta_model(name, output_stride=output_stride)
    _check_block_shapes(model, _expected_channels(name), SIZES_AT[output_stride])


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_real_forward_at_every_output_stride(output_stride):
    torch.manual_seed(0)
    model = build_backbone("resnet18", output_stride=output_stride).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, SIZE, SIZE))
    expected_block4 = SIZE // output_stride
    assert feats.block4.shape == (1, 512, expected_block4, expected_block4)
    assert all(torch.isfinite(f).all() for f in feats)
    assert torch.equal(model.forward_features(torch.zeros(1, 3, 8, 8)).block4,
                       model(torch.zeros(1, 3, 8, 8)).block4)


def test_backbone_exports_with_torch_export():
    # `rpnet export` traces models built on these backbones into a graph.
    torch.manual_seed(0)
    model = build_backbone("resnet18", norm="frozen", freeze_stem=True).eval()
    x = torch.randn(1, 3, 32, 32)
    exported = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        got, expected = exported(x), model(x)
    assert isinstance(got, BackboneFeatures)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_build_backbone_drops_the_head():
    model = build_backbone("resnet50")
    assert model.fc is None
    assert not any(k.startswith("fc.") for k in model.state_dict())
    assert model.output_stride == 16


def test_unknown_choices_list_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        build_backbone("resnet51")
    assert "resnet51" in str(err.value)
    for name in BACKBONES:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match=r"'bn'.*'frozen'"):
        build_backbone("resnet18", norm="group")
    with pytest.raises(ConfigError, match=r"8, 16, 32"):
        build_backbone("resnet18", output_stride=4)


def test_frozen_batchnorm_uses_running_statistics_in_train_mode():
    bn = FrozenBatchNorm2d(2)
    bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.randn(3, 2, 5, 5) * 7 + 3  # batch statistics far from the running ones
    bn.train()
    out = bn(x)
    # (x - mean) / sqrt(var + eps) * weight + bias with the running statistics.
    by_hand = torch.stack([(x[:, 0] - 1.0) / (4.0 + bn.eps) ** 0.5 * 2.0 + 0.5,
                           (x[:, 1] + 2.0) / (0.25 + bn.eps) ** 0.5], dim=1)
    torch.testing.assert_close(out, by_hand)
    torch.testing.assert_close(bn.eval()(x), out)
    assert torch.equal(bn.running_mean, torch.tensor([1.0, -2.0]))
    assert torch.equal(bn.running_var, torch.tensor([4.0, 0.25]))
    assert bn.num_batches_tracked.item() == 0
    # The affine parameters still learn.
    bn.train()
    bn(x).sum().backward()
    assert bn.weight.grad is not None and bn.bias.grad is not None


def test_frozen_batchnorm_keeps_batchnorm_state_dict():
    plain, frozen = nn.BatchNorm2d(3), FrozenBatchNorm2d(3)
    assert list(plain.state_dict()) == list(frozen.state_dict())
    frozen.load_state_dict(plain.state_dict())
    assert isinstance(frozen, nn.BatchNorm2d)


def test_frozen_norm_backbone_ignores_the_batch_in_train_mode():
    torch.manual_seed(0)
    model = build_backbone("resnet18", norm="frozen", output_stride=32)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        train_out = model.train()(x).block4
        eval_out = model.eval()(x).block4
    torch.testing.assert_close(train_out, eval_out)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_plain_batchnorm_backbone_does_use_the_batch():
    # The counterpart of the test above, so that it cannot pass by accident.
    torch.manual_seed(0)
    model = build_backbone("resnet18", norm="bn", output_stride=32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        train_out = model.train()(x).block4
    assert model.bn1.num_batches_tracked.item() == 1
    with torch.no_grad():
        eval_out = model.eval()(x).block4
    assert not torch.allclose(train_out, eval_out)


def test_freeze_stem():
    torch.manual_seed(0)
    model = build_backbone("resnet18", freeze_stem=True, output_stride=32)
    stem = list(model.stem_parameters())
    assert [p.shape for p in stem] == [(64, 3, 7, 7), (64,), (64,)]
    assert all(not p.requires_grad for p in stem)
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    assert not isinstance(model.layer1[0].bn1, FrozenBatchNorm2d)  # norm="bn" elsewhere
    stem_ids = {id(p) for p in stem}
    rest = [p for p in model.parameters() if id(p) not in stem_ids]
    assert rest and all(p.requires_grad for p in rest)

    mean_before = model.bn1.running_mean.clone()
    model.train()(torch.randn(2, 3, 32, 32)).block4.sum().backward()
    assert torch.equal(model.bn1.running_mean, mean_before)
    assert model.conv1.weight.grad is None and model.bn1.weight.grad is None
    assert model.layer1[0].conv1.weight.grad is not None


def test_build_backbone_loads_imagenet_style_weights(tmp_path):
    torch.manual_seed(0)
    imagenet = BACKBONES["resnet18"]().eval()  # with its 1000-class fc, as published
    path = save_weights(imagenet.state_dict(), tmp_path / "resnet18.pth")
    model = build_backbone("resnet18", output_stride=32, freeze_stem=True, pretrained=path).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model(x).block4, imagenet(x).block4)


# ---------------------------------------------------------------------------- the seam, for every family


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_keeps_the_seam(name):
    # What the classifier, IRN and DeepLab read: five levels at the seam's strides with the
    # announced channels, the stem's parameters, and a head the loader knows to ignore.
    with torch.device("meta"):
        model = BACKBONES[name](num_classes=None, output_stride=16)
        with_head = BACKBONES[name](num_classes=1000, output_stride=16)
    assert sorted(model.channels) == sorted(LEVELS) and model.output_stride == 16
    feats = model.forward_features(torch.empty(2, 3, 96, 96, device="meta"))
    strides = level_strides(16)
    for level, feat in zip(LEVELS, feats):
        assert tuple(feat.shape) == (2, model.channels[level], 96 // strides[level], 96 // strides[level])
    all_params = {id(p) for p in model.parameters()}
    stem = {id(p) for p in model.stem_parameters()}
    assert stem and stem < all_params
    head_keys = with_head.state_dict().keys() - model.state_dict().keys()
    assert head_keys and all(k.startswith(model.head_prefixes) for k in head_keys)
    assert not any(k.startswith(model.head_prefixes) for k in model.state_dict())


def test_level_strides():
    assert level_strides(32) == {"stem": 4, "block1": 4, "block2": 8, "block3": 16, "block4": 32}
    assert level_strides(8) == {"stem": 4, "block1": 4, "block2": 8, "block3": 8, "block4": 8}
    with pytest.raises(ConfigError, match=r"8, 16, 32"):
        level_strides(4)


def test_forward_features_detaches_the_named_levels():
    # The classifier's detach_block2: block2 is returned detached and block3 reads it detached.
    model = build_backbone("resnet18", output_stride=16)
    feats = model.forward_features(torch.randn(2, 3, 32, 32), detach=("block2",))
    assert feats.block1.requires_grad and not feats.block2.requires_grad and feats.block3.requires_grad
    feats.block4.sum().backward()
    assert model.layer1[0].conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is None
    assert model.layer3[0].conv1.weight.grad is not None
    with pytest.raises(ValueError, match="layer2"):
        model.forward_features(torch.randn(1, 3, 32, 32), detach=("layer2",))


def test_model_block4_reaches_the_classifier_and_irn_but_not_deeplab():
    from rpnet.config import load_config
    from rpnet.models.build import build_classifier, build_irn, build_seg_model

    cfg = load_config(None, ["model.backbone=resnet18", "model.block4=undilated", "train_seg.backbone_init=scratch"])
    for net in (build_classifier(cfg.model, 3).backbone, build_irn(cfg.model).backbone):
        assert [b.conv2.dilation[0] for b in net.layer4] == [1, 1] and net.output_stride == 16
    seg = build_seg_model(cfg.train_seg, cfg.model, 4, "scratch", None)
    assert max(b.conv2.dilation[0] for b in seg.backbone.layer4) > 1  # DeepLab's atrous backbone
    default = build_classifier(load_config(None, ["model.backbone=resnet18"]).model, 3).backbone
    assert [b.conv2.dilation[0] for b in default.layer4] == [1, 2]  # today's default: dilated
