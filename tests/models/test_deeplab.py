"""Segmentation models: LargeFOV's field of view and stride, ASPP rates, training, export."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rpnet.errors import ConfigError
from rpnet.io import IGNORE_INDEX
from rpnet.models.backbones import build_backbone
from rpnet.models.deeplab import (
    ASPP,
    ASPPConv,
    DeepLabLargeFOV,
    DeepLabV3Plus,
    LargeFOVHead,
    SEGMENTATION_MODELS,
    aspp_rates,
    build_segmentation_model,
)

SIZE = 64
CLASSES = 4
RESNET18_BLOCK1, RESNET18_BLOCK4 = 64, 512  # channels of resnet18's layer1 and layer4


def largefov(seed=0, output_stride=8, **kw):
    torch.manual_seed(seed)
    return DeepLabLargeFOV(build_backbone("resnet18", output_stride=output_stride), CLASSES, **kw)


def v3plus(seed=0, output_stride=8, **kw):
    torch.manual_seed(seed)
    return DeepLabV3Plus(build_backbone("resnet18", output_stride=output_stride), CLASSES, **kw)


# ---------------------------------------------------------------------------- LargeFOV


def test_largefov_fc6_is_a_3x3_conv_at_dilation_12_that_keeps_the_size():
    head = LargeFOVHead(8, CLASSES, channels=16).eval()
    assert head.fc6.kernel_size == (3, 3)
    assert head.fc6.dilation == (12, 12) and head.fc6.padding == (12, 12)
    assert head(torch.randn(1, 8, 20, 17)).shape == (1, CLASSES, 20, 17)


def test_largefov_impulse_reaches_exactly_offsets_0_and_12():
    # All weights 1, biases 0: the head is linear on a non-negative input. An impulse of 1
    # at (r, c) puts 1 in every fc6 channel at (r + 12 i, c + 12 j), i, j in {-1, 0, 1};
    # fc7 sums the `width` fc6 channels (-> width) and fc8 sums the `width` fc7 channels
    # (-> width ** 2) in every class. Every other position, 13+ cells away included, stays 0.
    width, in_channels, size = 5, 3, 32
    head = LargeFOVHead(in_channels, CLASSES, channels=width).eval()
    for conv in (head.fc6, head.fc7, head.fc8):
        nn.init.ones_(conv.weight)
        nn.init.zeros_(conv.bias)
    x = torch.zeros(1, in_channels, size, size)
    x[0, 1, 14, 14] = 1.0
    expected = torch.zeros(1, CLASSES, size, size)
    for r in (2, 14, 26):
        for c in (2, 14, 26):
            expected[0, :, r, c] = width ** 2
    torch.testing.assert_close(head(x), expected)

    # Near the border the taps that fall outside read zero padding: (3, 3) reaches only
    # rows and columns 3 and 15 (3 - 12 is outside the map).
    x = torch.zeros(1, in_channels, size, size)
    x[0, 0, 3, 3] = 1.0
    out = head(x)[0, 0]
    assert sorted(map(tuple, out.nonzero().tolist())) == [(3, 3), (3, 15), (15, 3), (15, 15)]


def test_largefov_head_width_defaults_to_1024_and_is_configurable():
    with torch.device("meta"):
        default = LargeFOVHead(RESNET18_BLOCK4, 21)
        narrow = LargeFOVHead(RESNET18_BLOCK4, 21, channels=256, dropout=0.3)
    c, k = 1024, 21
    # fc6 3x3 + bias, fc7 1x1 + bias, fc8 1x1 + bias, counted by hand
    expected = (RESNET18_BLOCK4 * c * 9 + c) + (c * c + c) + (c * k + k)
    assert sum(p.numel() for p in default.parameters()) == expected
    assert narrow.fc6.out_channels == narrow.fc7.out_channels == 256
    assert narrow.dropout.p == 0.3 and default.dropout.p == 0.5


def test_largefov_has_output_stride_8_and_returns_input_size():
    model = largefov().eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    assert model.logit_stride == 8
    assert model.forward_logits(x).shape == (2, CLASSES, SIZE // 8, SIZE // 8)
    assert model(x).shape == (2, CLASSES, SIZE, SIZE)
    odd = torch.randn(1, 3, 65, 50)  # sizes that are not multiples of 8: ceil(65/8) = 9, ceil(50/8) = 7
    assert model.forward_logits(odd).shape == (1, CLASSES, 9, 7)
    assert model(odd).shape == (1, CLASSES, 65, 50)


def test_largefov_forward_is_forward_logits_upsampled():
    model = largefov().eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    small = model.forward_logits(x)
    torch.testing.assert_close(model(x), F.interpolate(small, size=(SIZE, SIZE), mode="bilinear"))


# ---------------------------------------------------------------------------- v3+


def test_aspp_rates_are_6_12_18_at_os16_and_doubled_at_os8():
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(8) == (12, 24, 36)
    assert aspp_rates(32) == (3, 6, 9)
    for output_stride, rates in ((16, (6, 12, 18)), (8, (12, 24, 36))):
        model = v3plus(output_stride=output_stride)
        convs = [b for b in model.aspp.branches if isinstance(b, ASPPConv)]
        assert [conv[0].dilation for conv in convs] == [(r, r) for r in rates]
        assert [conv[0].padding for conv in convs] == [(r, r) for r in rates]
    assert model.aspp.rates == (12, 24, 36)
    assert v3plus(atrous_rates=(2, 4)).aspp.rates == (2, 4)


def test_aspp_structure_counted_by_hand():
    with torch.device("meta"):
        aspp = ASPP(RESNET18_BLOCK4, (6, 12, 18))
    n, c = 256, RESNET18_BLOCK4
    bn = 2 * n  # weight and bias of one batch norm
    expected = (
        (c * n + bn)  # 1x1 branch
        + 3 * (c * n * 9 + bn)  # three 3x3 atrous branches
        + (c * n + bn)  # image pooling branch
        + (5 * n * n + bn)  # projection of the five concatenated branches
    )
    assert sum(p.numel() for p in aspp.parameters()) == expected


@pytest.mark.parametrize("output_stride", [8, 16])
def test_v3plus_output_shapes(output_stride):
    model = v3plus(output_stride=output_stride).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    assert model.logit_stride == 4
    assert model.forward_logits(x).shape == (2, CLASSES, SIZE // 4, SIZE // 4)
    assert model(x).shape == (2, CLASSES, SIZE, SIZE)
    assert model.decoder.reduce[0].out_channels == 48
    assert model.decoder.fuse[0].in_channels == 48 + 256


def test_v3plus_runs_on_one_image_in_eval_mode():
    model = v3plus().eval()
    out = model(torch.randn(1, 3, SIZE, SIZE))
    assert out.shape == (1, CLASSES, SIZE, SIZE)
    assert torch.isfinite(out).all()


def test_aspp_pooling_branch_is_constant_over_the_image():
    model = v3plus().eval()
    pooling = model.aspp.branches[-1]
    out = pooling(torch.randn(2, RESNET18_BLOCK4, 8, 8))
    assert out.shape == (2, 256, 8, 8)
    torch.testing.assert_close(out, out[:, :, :1, :1].expand_as(out))


# ---------------------------------------------------------------------------- training


def test_training_a_few_steps_lowers_the_loss():
    torch.manual_seed(0)
    # dropout 0 so that the losses of successive steps differ only by the updates
    model = largefov(head_channels=64, dropout=0.0).train()
    images = torch.randn(2, 3, SIZE, SIZE)
    # one random class per 16 x 16 block: a mask that logits at stride 8 can fit
    mask = torch.randint(0, CLASSES, (2, SIZE // 16, SIZE // 16))
    mask = mask.repeat_interleave(16, dim=1).repeat_interleave(16, dim=2)
    mask[:, :8] = IGNORE_INDEX
    mask[0, 30:40, 30:40] = IGNORE_INDEX
    backbone_before = model.backbone.layer1[0].conv1.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(images), mask, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert not torch.equal(model.backbone.layer1[0].conv1.weight, backbone_before)


def test_ignored_pixels_do_not_contribute_to_the_loss():
    # One labelled pixel with logits (0, 0): its loss is log 2 whatever the ignored pixel holds.
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, :, 0, 1] = torch.tensor([100.0, -100.0])
    mask = torch.tensor([[[0, IGNORE_INDEX]]])
    loss = F.cross_entropy(logits, mask, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, torch.log(torch.tensor(2.0)))

    # On a model's output: changing the logits only where the mask is 255 leaves the loss
    # equal, and the ignored pixels get no gradient.
    model = largefov(head_channels=32).eval()
    out = model(torch.randn(1, 3, SIZE, SIZE)).detach().requires_grad_(True)
    mask = torch.randint(0, CLASSES, (1, SIZE, SIZE))
    mask[:, ::3, ::5] = IGNORE_INDEX
    ignored = (mask == IGNORE_INDEX).unsqueeze(1).expand_as(out)
    changed = torch.where(ignored, torch.randn_like(out) * 50, out)
    loss = F.cross_entropy(out, mask, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(F.cross_entropy(changed, mask, ignore_index=IGNORE_INDEX), loss)
    loss.backward()
    assert (out.grad[ignored] == 0).all() and (out.grad[~ignored] != 0).any()


# ---------------------------------------------------------------------------- export and lookup


@pytest.mark.parametrize("make", [largefov, v3plus], ids=["largefov", "v3plus"])
def test_jit_trace_matches_eager(make):
    model = make().eval()
    sample = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        traced = torch.jit.trace(model, sample)
        torch.testing.assert_close(traced(sample), model(sample), rtol=1e-5, atol=1e-5)
        # nothing about the sample's size is baked into the trace
        other = torch.randn(2, 3, 48, 40)
        out = traced(other)
        assert out.shape == (2, CLASSES, 48, 40)
        torch.testing.assert_close(out, model(other), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [largefov, v3plus], ids=["largefov", "v3plus"])
def test_parameter_groups_partition_the_trainable_parameters(make):
    model = make()
    model.backbone = build_backbone("resnet18", output_stride=8, freeze_stem=True)
    backbone, head = model.parameter_groups()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len({id(p) for p in backbone}) == len(backbone) and len({id(p) for p in head}) == len(head)
    assert not {id(p) for p in backbone} & {id(p) for p in head}
    assert {id(p) for p in backbone} | {id(p) for p in head} == trainable
    frozen = {id(p) for p in model.backbone.stem_parameters()}
    assert frozen and not frozen & trainable
    assert {id(p) for p in backbone} == {id(p) for p in model.backbone.parameters()} - frozen


def test_registry_and_build():
    assert sorted(SEGMENTATION_MODELS) == ["deeplab_largefov", "deeplabv3plus"]
    model = build_segmentation_model("deeplab_largefov", backbone="resnet18", num_classes=21)
    assert isinstance(model, DeepLabLargeFOV)
    assert model.backbone.output_stride == 8 and model.head.fc8.out_channels == 21
    assert model.head.fc6.out_channels == 1024
    model = build_segmentation_model("deeplabv3plus", backbone="resnet18", num_classes=3,
                                     output_stride=16, norm="frozen")
    assert isinstance(model, DeepLabV3Plus) and model.aspp.rates == (6, 12, 18)
    assert model.decoder.classifier.out_channels == 3


def test_build_errors_name_the_choices():
    with pytest.raises(ConfigError, match="deeplab_largefov.*deeplabv3plus"):
        build_segmentation_model("deeplabv4", backbone="resnet18", num_classes=3)
    with pytest.raises(ConfigError, match="num_classes"):
        build_segmentation_model("deeplabv3plus", backbone="resnet18", num_classes=0)
    with pytest.raises(ConfigError, match="resnet50"):
        build_segmentation_model("deeplabv3plus", backbone="vgg16", num_classes=3)
