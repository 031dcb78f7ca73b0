"""The ConvNeXt family (Liu et al., "A ConvNet for the 2020s", CVPR 2022) with timm's parameter names.

The modules are named as in timm's ``models/convnext.py``, so a state dict saved from a timm
ConvNeXt (``timm.create_model("convnext_tiny", pretrained=True).state_dict()``) loads key for key:

- ``stem.0`` (4x4 conv, stride 4) and ``stem.1`` (LayerNorm over channels);
- ``stages.0`` .. ``stages.3``; stages 1-3 start with ``downsample.0`` (LayerNorm) and
  ``downsample.1`` (2x2 conv, stride 2); every stage has ``blocks.M`` made of ``conv_dw``
  (7x7 depthwise), ``norm`` (LayerNorm), ``mlp.fc1`` / ``mlp.fc2`` (Linear, 4x expansion, GELU)
  and the layer scale ``gamma``;
- ``head.norm`` / ``head.fc``: the ImageNet head, built only so that such files load and ignored
  by :func:`~rpnet.models.backbones.build_backbone`, which also accepts timm's ``num_classes=0``
  files (``head.norm`` only). The original Facebook checkpoints use other names
  (``downsample_layers``, ``dwconv``); timm's ``checkpoint_filter_fn`` converts them.

Levels of the backbone seam: stem = the stem's output (dims[0] channels, stride 4) and
block1..block4 = stages 0..3.

Output stride 16 or 8, as timm's ``output_stride``: a stage that would bring the stride past the
output stride keeps its 2x2 downsampling conv but at stride 1, dilated as the blocks before it
(1, or 2 for the last stage at output stride 8), and its blocks' 7x7 depthwise convs are dilated
by 2 (by 4 for the last stage at output stride 8), so the weights of the stride-32 network apply
unchanged. The stride-1 downsampling conv is padded at the bottom and right only, so that on an
input whose sides are multiples of 32 the dilated network is exactly the stride-32 network
evaluated at every pixel of the finer grid: block4 at output stride 16, taken at every other row
and column, is block4 at output stride 32. (timm pads the dilation-2 conv on both sides, which
shifts its output stride 8 block4 by one pixel of the finer grid; the weights are the same.)

Sizes round up like a ResNet's: the stem and the stride-2 downsampling convs pad their input with
zeros at the bottom and right to a multiple of their stride, so every level has ceil(H / stride)
rows (timm rounds down; on inputs whose sides are multiples of 32 the two agree exactly).

``norm``: ConvNeXt has LayerNorm only, which normalises each pixel of each image by itself and
keeps no statistics of the batch, so "bn" and "frozen" (batch statistics or running ones) build
the same, trainable, LayerNorms. ``freeze_stem`` freezes ``stem.0`` and ``stem.1``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    IMAGENET_CLASSES,
    STEM_STRIDE,
    Backbone,
    check_norm,
    check_output_stride,
    register_backbone,
)

LAYER_NORM_EPS = 1e-6  # timm's LayerNorm and LayerNorm2d
LAYER_SCALE_INIT = 1e-6  # gamma's initial value (timm's ls_init_value)
KERNEL_SIZE = 7  # the depthwise conv of every block
MLP_RATIO = 4
DOWNSAMPLE_KERNEL = 2  # the 2x2 stride-2 conv between stages
INIT_STD = 0.02  # truncated normal for conv and linear weights, as timm


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, each pixel normalised by itself.

    The keys are ``nn.LayerNorm``'s (``weight``, ``bias``), as timm's LayerNorm2d.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class PaddedConv2d(nn.Conv2d):
    """A conv with no padding of its own that pads its input in ``forward``.

    All padding goes at the bottom and right, so output pixel i reads input pixels i * stride +
    dilation * k, k = 0 .. kernel - 1. Strided (kernel = stride, the stem and the downsampling
    convs): up to a multiple of the stride, so the output has ceil(H / stride) rows. Stride 1 (a
    downsampling conv turned into a dilated one): dilation * (kernel - 1) zeros, so the size is kept.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1) -> None:
        if stride > 1 and (kernel_size != stride or dilation != 1):
            raise ValueError("a strided PaddedConv2d needs kernel_size == stride and no dilation")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        stride, kernel, dilation = self.stride[0], self.kernel_size[0], self.dilation[0]
        if stride > 1:
            pad = (0, -x.shape[-1] % stride, 0, -x.shape[-2] % stride)
        else:
            pad = (0, dilation * (kernel - 1)) * 2
        return super().forward(F.pad(x, pad))


class Mlp(nn.Module):
    """fc1 (C -> 4C) - GELU - fc2 (4C -> C) on channels-last (..., C) tensors, timm's Mlp keys."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(..., C) -> (..., C)."""
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """x + gamma * mlp(norm(conv_dw(x))): a 7x7 depthwise conv (dilated when the stage is), then
    LayerNorm and the MLP per pixel. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, KERNEL_SIZE, padding=dilation * (KERNEL_SIZE - 1) // 2,
                                 dilation=dilation, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, MLP_RATIO * dim)
        self.gamma = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = self.conv_dw(x).permute(0, 2, 3, 1)  # channels last for LayerNorm and the Linears
        y = self.mlp(self.norm(y)) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtStage(nn.Module):
    """``downsample`` (LayerNorm + 2x2 conv; Identity for the first stage) and ``blocks``.

    (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, stride: int = 2,
                 dilation: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        first_dilation, block_dilation = dilation
        if in_channels == out_channels and stride == 1 and first_dilation == block_dilation:
            self.downsample: nn.Module = nn.Identity()
        else:
            self.downsample = nn.Sequential(
                LayerNorm2d(in_channels, eps=LAYER_NORM_EPS),
                PaddedConv2d(in_channels, out_channels, DOWNSAMPLE_KERNEL, stride, first_dilation),
            )
        self.blocks = nn.Sequential(*(ConvNeXtBlock(out_channels, block_dilation) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        """See the class docstring."""
        return self.blocks(self.downsample(x))


class ConvNeXt(Backbone):
    """A ConvNeXt as a :class:`~rpnet.models.backbones.base.Backbone`: stem and stages 0..3.

    Args:
        depths: blocks per stage, e.g. (3, 3, 9, 3) for ConvNeXt-T.
        dims: channels per stage, e.g. (96, 192, 384, 768).
        num_classes: size of the ImageNet head ``head.fc``; None builds no head. The head is
            never used by ``forward``; it only lets classification checkpoints load.
        output_stride: 32, 16 or 8; the stride of block4 relative to the input.
        norm: "bn" or "frozen", both the same for LayerNorm (module docstring).
        freeze_stem: ``stem.0`` and ``stem.1`` get ``requires_grad=False``.
        dilated: a stage kept at stride 1 for the output stride dilates its convs (timm's); False: not.

    Attributes:
        channels: the channel count of each level, e.g. {"stem": 96, "block1": 96, ...}.
        output_stride: the input size over block4's size.
    """

    head_prefixes = ("head.",)

    def __init__(self, depths: tuple[int, int, int, int], dims: tuple[int, int, int, int], *,
                 num_classes: int | None = IMAGENET_CLASSES, output_stride: int = 32, norm: str = "bn",
                 freeze_stem: bool = False, dilated: bool = True) -> None:
        super().__init__()
        check_output_stride(output_stride)
        check_norm(norm)
        self.output_stride = output_stride
        self.stem = nn.Sequential(
            PaddedConv2d(3, dims[0], STEM_STRIDE, stride=STEM_STRIDE), LayerNorm2d(dims[0], eps=LAYER_NORM_EPS)
        )
        stages = []
        stride, dilation = STEM_STRIDE, 1
        in_channels = dims[0]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            stage_stride = 1 if i == 0 else 2
            previous_dilation = dilation
            if stride * stage_stride > output_stride:
                # Keep the resolution and (dilated) widen the receptive field instead.
                if dilated:
                    dilation *= stage_stride
                stage_stride = 1
            stride *= stage_stride
            stages.append(ConvNeXtStage(in_channels, dim, depth, stage_stride, (previous_dilation, dilation)))
            in_channels = dim
        self.stages = nn.Sequential(*stages)
        # Not annotated: TorchScript infers dict[str, int] from the value.
        self.channels = {"stem": dims[0], "block1": dims[0], "block2": dims[1], "block3": dims[2],
                         "block4": dims[3]}
        self.head = None
        if num_classes is not None:
            self.head = nn.ModuleDict({"norm": LayerNorm2d(dims[-1], eps=LAYER_NORM_EPS),
                                       "fc": nn.Linear(dims[-1], num_classes)})
        self._init_weights()
        if freeze_stem:
            for param in self.stem_parameters():
                param.requires_grad_(False)

    def _init_weights(self) -> None:
        # timm's initialisation, which matters when training from scratch.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=INIT_STD)
                nn.init.zeros_(module.bias)

    def stem_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of ``stem.0`` (the patchify conv) and ``stem.1`` (its LayerNorm)."""
        yield from self.stem.parameters()

    def levels(self) -> tuple[Callable[[Tensor], Tensor], ...]:
        """stem, stages.0, stages.1, stages.2, stages.3."""
        return (self.stem, *self.stages)


@register_backbone("convnext_tiny")
def convnext_tiny(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt-T: depths (3, 3, 9, 3), dims (96, 192, 384, 768). Keyword arguments go to :class:`ConvNeXt`."""
    return ConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), **kwargs)


@register_backbone("convnext_small")
def convnext_small(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt-S: depths (3, 3, 27, 3), dims (96, 192, 384, 768). Keyword arguments go to :class:`ConvNeXt`."""
    return ConvNeXt((3, 3, 27, 3), (96, 192, 384, 768), **kwargs)


@register_backbone("convnext_base")
def convnext_base(**kwargs: Any) -> ConvNeXt:
    """ConvNeXt-B: depths (3, 3, 27, 3), dims (128, 256, 512, 1024). Keyword arguments go to :class:`ConvNeXt`."""
    return ConvNeXt((3, 3, 27, 3), (128, 256, 512, 1024), **kwargs)
