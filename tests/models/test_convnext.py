"""ConvNeXt: timm's keys and parameter counts, strides and dilation, loading, and the three models on it."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from rpnet.config import ModelConfig, load_config
from rpnet.errors import ConfigError
from rpnet.models.backbones import BACKBONES, BackboneFeatures, build_backbone
from rpnet.models.backbones.convnext import ConvNeXt, ConvNeXtBlock, LayerNorm2d
from rpnet.models.deeplab import DeepLabLargeFOV, DeepLabV3Plus
from rpnet.models.irn import IRNet
from rpnet.models.rpnet import PrototypeSettings, RPNetClassifier
from rpnet.models.weights import save_weights

SIZE = 64
# A ConvNeXt small enough for forward and backward passes in a test: one block per stage.
TINY_DEPTHS, TINY_DIMS = (1, 1, 1, 1), (8, 16, 24, 32)


def tiny(output_stride: int = 16, **kw) -> ConvNeXt:
    torch.manual_seed(0)
    return ConvNeXt(TINY_DEPTHS, TINY_DIMS, num_classes=None, output_stride=output_stride, **kw)


@functools.cache
def meta_model(name: str, output_stride: int = 32) -> ConvNeXt:
    """The model with timm's 1000-class head, as shapes without storage."""
    with torch.device("meta"):
        return BACKBONES[name](num_classes=1000, output_stride=output_stride)


# ConvNeXt-T (dims 96, 192, 384, 768; depths 3, 3, 9, 3), counted by hand:
#   stem: 4x4 conv 3 -> 96 with bias 3*96*16 + 96 = 4,704, LayerNorm 2*96 = 192          ->      4,896
#   a block of width d: depthwise 7x7 with bias 49d + d, LayerNorm 2d, fc1 d*4d + 4d,
#     fc2 4d*d + d, gamma d = 8d^2 + 58d: 79,296 (96), 306,048 (192), 1,201,920 (384), 4,763,136 (768)
#   blocks: 3*79,296 + 3*306,048 + 9*1,201,920 + 3*4,763,136                          -> 26,262,720
#   downsampling before stages 1-3: LayerNorm 2*c_in + 2x2 conv c_in*c_out*4 + c_out:
#     74,112 (96 -> 192) + 295,680 (192 -> 384) + 1,181,184 (384 -> 768)               ->  1,550,976
#   backbone without head: 4,896 + 26,262,720 + 1,550,976                             -> 27,818,592
#   head.norm 2*768 = 1,536 (what timm keeps with num_classes=0)                      -> 27,820,128
#   head.fc 768*1000 + 1000 = 769,000                                                 -> 28,589,128
CONVNEXT_TINY_PARAMS = {"backbone": 27_818_592, "num_classes=0": 27_820_128, "imagenet": 28_589_128}
# timm's published sizes (millions, with the 1000-class head) of the larger two.
TIMM_MILLIONS = {"convnext_small": 50.22, "convnext_base": 88.59}


def _count(model, skip: str = "") -> int:
    return sum(p.numel() for k, p in model.named_parameters() if not (skip and k.startswith(skip)))


def test_convnext_tiny_parameter_count_worked_out_by_hand():
    model = meta_model("convnext_tiny")
    assert _count(model, skip="head.") == CONVNEXT_TINY_PARAMS["backbone"]
    assert _count(model, skip="head.fc.") == CONVNEXT_TINY_PARAMS["num_classes=0"]
    assert _count(model) == CONVNEXT_TINY_PARAMS["imagenet"]
    with torch.device("meta"):
        assert _count(build_backbone("convnext_tiny")) == CONVNEXT_TINY_PARAMS["backbone"]


@pytest.mark.parametrize("name", sorted(TIMM_MILLIONS))
def test_larger_convnexts_match_timms_published_sizes(name):
    assert round(_count(meta_model(name)) / 1e6, 2) == TIMM_MILLIONS[name]


def test_timm_key_names_and_shapes():
    keys = {k: tuple(v.shape) for k, v in meta_model("convnext_tiny").state_dict().items()}
    assert keys["stem.0.weight"] == (96, 3, 4, 4)
    assert keys["stem.1.weight"] == (96,)
    assert not any(k.startswith("stages.0.downsample") for k in keys)  # stage 0 keeps 96 channels
    assert keys["stages.1.downsample.0.bias"] == (96,)  # LayerNorm on the input
    assert keys["stages.1.downsample.1.weight"] == (192, 96, 2, 2)
    assert keys["stages.2.blocks.8.conv_dw.weight"] == (384, 1, 7, 7)
    assert "stages.2.blocks.9.conv_dw.weight" not in keys  # stage 2 has 9 blocks
    assert keys["stages.2.blocks.8.norm.weight"] == (384,)
    assert keys["stages.2.blocks.8.mlp.fc1.weight"] == (1536, 384)
    assert keys["stages.2.blocks.8.mlp.fc2.weight"] == (384, 1536)
    assert keys["stages.3.blocks.2.gamma"] == (768,)
    assert keys["head.norm.weight"] == (768,)
    assert keys["head.fc.weight"] == (1000, 768)
    # stem 4, 18 blocks x 9 (gamma, conv_dw, norm, fc1, fc2 weights and biases), 3 downsamplings x 4, head 4.
    assert len(keys) == 4 + 18 * 9 + 3 * 4 + 4
    assert not [k for k in keys if "running" in k]  # LayerNorm only: no buffers


# Level sizes on a 64x64 input: stem and block1 H/4, H/8, then H/16 or H/8, then H/output_stride.
SIZES_AT = {32: (16, 16, 8, 4, 2), 16: (16, 16, 8, 4, 4), 8: (16, 16, 8, 8, 8)}


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_level_shapes_at_each_output_stride(output_stride):
    model = meta_model("convnext_tiny", output_stride)
    channels = (96, 96, 192, 384, 768)
    assert model.channels == dict(zip(BackboneFeatures._fields, channels))
    assert model.output_stride == output_stride
    feats = model(torch.empty(2, 3, SIZE, SIZE, device="meta"))
    assert isinstance(feats, BackboneFeatures)
    for feat, c, s in zip(feats, channels, SIZES_AT[output_stride]):
        assert tuple(feat.shape) == (2, c, s, s)


@pytest.mark.parametrize("output_stride, dilations", [
    # (stages.2 downsampling conv, stages.2 blocks, stages.3 downsampling conv, stages.3 blocks)
    (32, (1, 1, 1, 1)),
    (16, (1, 1, 1, 2)),
    (8, (1, 2, 2, 4)),
])
def test_dilations_follow_output_stride(output_stride, dilations):
    model = meta_model("convnext_tiny", output_stride)
    stages = model.stages
    got = (stages[2].downsample[1].dilation[0], stages[2].blocks[0].conv_dw.dilation[0],
           stages[3].downsample[1].dilation[0], stages[3].blocks[2].conv_dw.dilation[0])
    assert got == dilations
    strides = tuple(stages[i].downsample[1].stride[0] for i in (1, 2, 3))
    assert strides == {32: (2, 2, 2), 16: (2, 2, 1), 8: (2, 1, 1)}[output_stride]


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_network_is_the_stride_32_network_on_a_finer_grid(output_stride):
    # Same weights; on sides that are multiples of 32, every other (every fourth) row and column of
    # block4 at output stride 16 (8) is block4 at output stride 32, and likewise for block3 at 8.
    torch.manual_seed(0)
    coarse = tiny(32).eval()
    fine = tiny(output_stride).eval()
    fine.load_state_dict(coarse.state_dict())
    x = torch.randn(1, 3, SIZE, 96)
    with torch.no_grad():
        a, b = coarse(x), fine(x)
    step = 32 // output_stride
    torch.testing.assert_close(b.block4[..., ::step, ::step], a.block4, rtol=1e-4, atol=1e-5)
    step3 = 16 // min(16, output_stride)
    torch.testing.assert_close(b.block3[..., ::step3, ::step3], a.block3, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.block2, a.block2)


def test_sizes_round_up_like_a_resnet():
    # ceil(38 / s) x ceil(42 / s) for s = 4, 4, 8, 16, 16: the stem and the stride-2 convs pad
    # the bottom and right; a ResNet's padded convs give the same sizes.
    x = torch.randn(1, 3, 38, 42)
    with torch.no_grad():
        got = [tuple(f.shape[-2:]) for f in tiny(16).eval()(x)]
        resnet = [tuple(f.shape[-2:]) for f in build_backbone("resnet18").eval()(x)]
    assert got == [(10, 11), (10, 11), (5, 6), (3, 3), (3, 3)] == resnet


def test_layer_norm_2d_by_hand():
    norm = LayerNorm2d(2, eps=0.0)
    x = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).repeat(1, 1, 2, 3)
    # each pixel (1, 3): mean 2, variance 1 -> (-1, 1); weight 1, bias 0
    torch.testing.assert_close(norm(x), torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 3))


def test_block_is_x_plus_gamma_times_mlp_of_norm_of_depthwise_conv():
    torch.manual_seed(0)
    block = ConvNeXtBlock(4, dilation=2)
    with torch.no_grad():
        block.gamma.uniform_(0.5, 1.5)
    x = torch.randn(2, 4, 9, 11)
    y = F.conv2d(x, block.conv_dw.weight, block.conv_dw.bias, padding=6, dilation=2, groups=4)
    y = F.layer_norm(y.permute(0, 2, 3, 1), (4,), block.norm.weight, block.norm.bias, 1e-6)
    y = F.linear(F.gelu(F.linear(y, block.mlp.fc1.weight, block.mlp.fc1.bias)), block.mlp.fc2.weight, block.mlp.fc2.bias)
    torch.testing.assert_close(block(x), x + (y * block.gamma).permute(0, 3, 1, 2))


def test_norm_choices_build_the_same_layer_norms():
    bn, frozen = tiny(norm="bn"), tiny(norm="frozen")
    assert bn.state_dict().keys() == frozen.state_dict().keys()
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in bn.state_dict().items())
    assert all(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ConfigError, match=r"'bn'.*'frozen'"):
        build_backbone("convnext_tiny", norm="group")
    with pytest.raises(ConfigError, match=r"8, 16, 32"):
        build_backbone("convnext_tiny", output_stride=4)


def test_freeze_stem_freezes_stem_0_and_stem_1_only():
    model = tiny(freeze_stem=True)
    stem = list(model.stem_parameters())
    assert [tuple(p.shape) for p in stem] == [(8, 3, 4, 4), (8,), (8,), (8,)]
    assert all(not p.requires_grad for p in stem)
    frozen = {id(p) for p in stem}
    assert all(p.requires_grad for p in model.parameters() if id(p) not in frozen)


def test_build_backbone_drops_the_head():
    with torch.device("meta"):
        model = build_backbone("convnext_tiny")
    assert model.head is None
    assert not any(k.startswith("head.") for k in model.state_dict())


@pytest.mark.parametrize("head", ["imagenet", "num_classes=0"])
def test_timm_state_dict_loads_by_path(tmp_path, head):
    torch.manual_seed(0)
    timm_like = BACKBONES["convnext_tiny"]().eval()  # with timm's 1000-class head
    state = timm_like.state_dict()
    if head == "num_classes=0":  # timm keeps head.norm when the classifier is removed
        state = {k: v for k, v in state.items() if not k.startswith("head.fc.")}
    path = save_weights(state, tmp_path / "convnext_tiny.safetensors")
    model = build_backbone("convnext_tiny", output_stride=32, norm="frozen", freeze_stem=True,
                           pretrained=path).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        for got, expected in zip(model(x), timm_like(x)):
            assert torch.equal(got, expected)


def test_foreign_keys_and_shapes_are_refused_with_the_keys_listed(tmp_path):
    torch.manual_seed(0)
    state = BACKBONES["convnext_tiny"](num_classes=None).state_dict()
    # Facebook's original names for the stem, which timm's checkpoint filter renames.
    state["downsample_layers.0.0.weight"] = state.pop("stem.0.weight")
    state["stages.1.downsample.1.weight"] = torch.zeros(192, 96, 1, 1)
    path = save_weights(state, tmp_path / "fb.pth")
    with pytest.raises(ConfigError) as err:
        build_backbone("convnext_tiny", pretrained=path)
    message = str(err.value)
    assert "fb.pth" in message and "ConvNeXt" in message
    assert "missing keys: stem.0.weight" in message
    assert "unexpected keys: downsample_layers.0.0.weight" in message
    assert "stages.1.downsample.1.weight (file (192, 96, 1, 1), model (192, 96, 2, 2))" in message


# ---------------------------------------------------------------------------- the models on it


def test_classifier_forward_backward_detaches_block2():
    model = RPNetClassifier(tiny(16), num_classes=3, prototypes=PrototypeSettings.from_config(ModelConfig(embed_dim=8))).train()
    out = model(torch.randn(2, 3, SIZE, SIZE), group_size=2)
    assert out.logits.shape == out.logits_enhanced.shape == (2, 3)
    assert out.features.shape == (2, 32, 4, 4)
    (out.logits.sum() + out.logits_enhanced.sum()).backward()
    b = model.backbone
    # IRN's CAM net: no gradient into the stem and block1-2 (stages 0-1) ...
    assert b.stem[0].weight.grad is None
    assert b.stages[1].blocks[0].conv_dw.weight.grad is None
    # ... but blocks 3-4 and the new layers learn.
    assert b.stages[2].blocks[0].conv_dw.weight.grad.abs().sum() > 0
    assert b.stages[3].downsample[1].weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad is not None and model.embeddings["block2"].weight.grad is not None


@pytest.mark.parametrize("freeze", [True, False])
def test_irn_forward_backward(freeze):
    net = IRNet(tiny(16, norm="frozen", freeze_stem=True), freeze_backbone=freeze).train()
    assert net.edge_reduce["stem"][0].in_channels == 8  # the stem's width, from the backbone
    out = net(torch.randn(2, 3, 38, 42))
    assert out.edge.shape == (2, 1, 10, 11) and out.displacement.shape == (2, 2, 10, 11)
    (out.edge.sum() + out.displacement.sum()).backward()
    stage3 = net.backbone.stages[3].blocks[0].conv_dw.weight.grad
    assert (stage3 is None) == freeze
    assert net.edge_out.weight.grad is not None and net.disp_out.weight.grad is not None
    if freeze:
        assert net.parameter_groups().backbone == []


def test_irn_on_convnext_tiny_reads_96_stem_channels():
    with torch.device("meta"):
        net = IRNet(build_backbone("convnext_tiny", norm="frozen", freeze_stem=True))
    for branch in (net.edge_reduce, net.disp_reduce):
        assert [branch[lv][0].in_channels for lv in branch] == [96, 96, 192, 384, 768]


@pytest.mark.parametrize("head, output_stride", [(DeepLabLargeFOV, 8), (DeepLabV3Plus, 16)])
def test_deeplab_forward_backward(head, output_stride):
    model = head(tiny(output_stride), 4).train()
    logits = model(torch.randn(2, 3, SIZE, SIZE))
    assert logits.shape == (2, 4, SIZE, SIZE)
    logits.sum().backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameter_groups()[1])


def test_config_accepts_convnext_names():
    cfg = load_config(None, ["model.backbone=convnext_tiny", "train_seg.backbone=convnext_base", "data.root=/x"])
    assert cfg.model.backbone == "convnext_tiny" and cfg.train_seg.backbone == "convnext_base"
