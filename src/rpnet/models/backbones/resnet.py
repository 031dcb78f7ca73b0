"""The ResNet family (ResNet, ResNeXt, Wide-ResNet) with torchvision's parameter names.

The modules are named exactly as in torchvision's ``models/resnet.py`` (which timm's
plain ResNets share): ``conv1``, ``bn1``, ``layer1``..``layer4`` of ``BasicBlock`` /
``Bottleneck`` (``conv1``, ``bn1``, ..., ``downsample.0`` / ``downsample.1``) and ``fc``,
so ImageNet checkpoints from either library load key for key. Bottleneck puts its
stride on the 3x3 conv (torchvision's "v1.5"), as the published weights expect.

The levels of the backbone seam (:mod:`rpnet.models.backbones.base`) are the stem
(conv1-bn1-relu-maxpool, 64 channels at stride 4) and ``layer1``..``layer4`` as
``block1``..``block4``; the classifier head ``fc`` exists only so that ImageNet weights
load with their own keys and is dropped by :func:`~rpnet.models.backbones.build_backbone`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from rpnet.errors import ConfigError

from .base import IMAGENET_CLASSES, LEVELS, Backbone, check_norm, register_backbone

NormLayer = Callable[[int], nn.Module]

STEM_CHANNELS = 64
STAGE_PLANES = (64, 128, 256, 512)  # planes of layer1..layer4 before block expansion
BASE_WIDTH = 64  # the width_per_group at which a Bottleneck has no extra width

# Which of layer2, layer3, layer4 trade their stride of 2 for a dilation (torchvision's
# replace_stride_with_dilation), per output stride of block4.
DILATE_FOR_OUTPUT_STRIDE: dict[int, tuple[bool, bool, bool]] = {
    32: (False, False, False),
    16: (False, False, True),
    8: (False, True, True),
}


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch norm that always normalises with its running statistics (IRN's FixedBatchNorm).

    Unlike ``nn.BatchNorm2d`` it neither uses batch statistics nor updates the running
    ones in ``train()`` mode, so a small batch cannot spoil the ImageNet statistics.
    The affine ``weight`` and ``bias`` stay trainable parameters, and the state-dict
    keys are BatchNorm2d's, so checkpoints load into either class.

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` converts every BatchNorm subclass,
    this one included, into a trainable SyncBatchNorm: do not apply it to a model
    that uses frozen batch norm.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), normalised with the running mean and variance."""
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=False, momentum=0.0, eps=self.eps,
        )


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
            dilation: int = 1) -> nn.Conv2d:
    """A bias-free 3x3 conv whose padding keeps the size (up to the stride) at any dilation."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, dilation=dilation, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 1x1 conv."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and an identity (or 1x1 projection) shortcut: ResNet-18/34."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1,
                 base_width: int = BASE_WIDTH, dilation: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if groups != 1 or base_width != BASE_WIDTH:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        # torchvision refuses dilation here; both 3x3 convs take it so that
        # ResNet-18/34 also run at output stride 16 or 8.
        self.conv1 = conv3x3(in_channels, planes, stride, dilation=dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped, strided, dilated), 1x1 expand, plus a shortcut.

    The inner width is ``planes * base_width / 64 * groups``: ResNeXt-50 32x4d has
    groups 32 and base width 4, Wide-ResNet-50-2 has base width 128.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1,
                 base_width: int = BASE_WIDTH, dilation: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        width = int(planes * (base_width / BASE_WIDTH)) * groups
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, 4 * planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(Backbone):
    """A ResNet as a :class:`~rpnet.models.backbones.base.Backbone`: stem and layer1..layer4.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        num_classes: size of the ImageNet head ``fc``; None builds no head. The head
            is never used by ``forward``; it only lets classification checkpoints load.
        groups, width_per_group: ResNeXt / Wide-ResNet widths, as torchvision.
        output_stride: 32, 16 or 8; the stride of block4 relative to the input.
        norm_layer: the batch-norm class for every norm layer except a frozen stem's.
        freeze_stem: conv1 and bn1 get ``requires_grad=False`` and bn1 is a
            :class:`FrozenBatchNorm2d` (docs/method.md: conv1 and bn1 frozen).
        dilated: a stage that gives up its stride for the output stride dilates its later 3x3 convs
            (torchvision's replace_stride_with_dilation, DeepLab's); False keeps them undilated, as
            IRN's and the released RPNet code's ``strides=(2, 2, 2, 1)`` networks do.

    Attributes:
        channels: the channel count of each level, e.g. {"stem": 64, "block1": 256, ...}.
        output_stride: the input size over block4's size.
    """

    head_prefixes = ("fc.",)

    def __init__(self, block: Block, layers: tuple[int, int, int, int], *,
                 num_classes: int | None = IMAGENET_CLASSES, groups: int = 1,
                 width_per_group: int = BASE_WIDTH, output_stride: int = 32,
                 norm_layer: NormLayer = nn.BatchNorm2d, freeze_stem: bool = False, dilated: bool = True) -> None:
        super().__init__()
        self._dilated = dilated
        if output_stride not in DILATE_FOR_OUTPUT_STRIDE:
            raise ConfigError(f"unknown output_stride {output_stride}; "
                              f"choose from {sorted(DILATE_FOR_OUTPUT_STRIDE)}")
        self.output_stride = output_stride
        self._groups = groups
        self._base_width = width_per_group
        self._norm_layer = norm_layer
        self._in_channels = STEM_CHANNELS
        self._dilation = 1

        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = (FrozenBatchNorm2d if freeze_stem else norm_layer)(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        dilate = DILATE_FOR_OUTPUT_STRIDE[output_stride]
        self.layer1 = self._make_layer(block, STAGE_PLANES[0], layers[0])
        self.layer2 = self._make_layer(block, STAGE_PLANES[1], layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, STAGE_PLANES[2], layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, STAGE_PLANES[3], layers[3], stride=2, dilate=dilate[2])
        # Not annotated: TorchScript infers dict[str, int] from the value
        # and warns about annotated instance attributes.
        self.channels = {
            "stem": STEM_CHANNELS,
            **{name: planes * block.expansion for name, planes in zip(LEVELS[1:], STAGE_PLANES)},
        }
        self.fc = None if num_classes is None else nn.Linear(self.channels["block4"], num_classes)

        self._init_weights()
        if freeze_stem:
            for param in self.stem_parameters():
                param.requires_grad_(False)

    def _make_layer(self, block: Block, planes: int, num_blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            # Keep the resolution and (dilated) widen the receptive field instead.
            if self._dilated:
                self._dilation *= stride
            stride = 1
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(
                conv1x1(self._in_channels, out_channels, stride), self._norm_layer(out_channels)
            )
        make = partial(block, groups=self._groups, base_width=self._base_width,
                       norm_layer=self._norm_layer)
        # The first block keeps the previous dilation (as torchvision does): its 3x3 conv
        # reads the same grid it read when it had the stride; only the blocks after it,
        # whose inputs are no longer subsampled, need the wider spacing.
        blocks = [make(self._in_channels, planes, stride, downsample, dilation=previous_dilation)]
        self._in_channels = out_channels
        blocks += [make(out_channels, planes, dilation=self._dilation) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        # torchvision's initialisation, which matters when training from scratch.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stem_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of conv1 and bn1 (the stem the method keeps frozen)."""
        yield from self.conv1.parameters()
        yield from self.bn1.parameters()

    def stem(self, x: Tensor) -> Tensor:
        """conv1-bn1-relu-maxpool: (B, 3, H, W) -> (B, 64, H/4, W/4), the input of layer1."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def levels(self) -> tuple[Callable[[Tensor], Tensor], ...]:
        """stem, layer1, layer2, layer3, layer4."""
        return (self.stem, self.layer1, self.layer2, self.layer3, self.layer4)


NORM_LAYERS: dict[str, NormLayer] = {"bn": nn.BatchNorm2d, "frozen": FrozenBatchNorm2d}


def _resnet(block: Block, layers: tuple[int, int, int, int], norm: str, **kwargs: Any) -> ResNet:
    check_norm(norm)
    return ResNet(block, layers, norm_layer=NORM_LAYERS[norm], **kwargs)


@register_backbone("resnet18")
def resnet18(*, norm: str = "bn", **kwargs: Any) -> ResNet:
    """ResNet-18: BasicBlocks (2, 2, 2, 2). Other keyword arguments go to :class:`ResNet`."""
    return _resnet(BasicBlock, (2, 2, 2, 2), norm, **kwargs)


@register_backbone("resnet34")
def resnet34(*, norm: str = "bn", **kwargs: Any) -> ResNet:
    """ResNet-34: BasicBlocks (3, 4, 6, 3). Other keyword arguments go to :class:`ResNet`."""
    return _resnet(BasicBlock, (3, 4, 6, 3), norm, **kwargs)


@register_backbone("resnet50")
def resnet50(*, norm: str = "bn", **kwargs: Any) -> ResNet:
    """ResNet-50: Bottlenecks (3, 4, 6, 3). Other keyword arguments go to :class:`ResNet`."""
    return _resnet(Bottleneck, (3, 4, 6, 3), norm, **kwargs)


@register_backbone("resnet101")
def resnet101(*, norm: str = "bn", **kwargs: Any) -> ResNet:
    """ResNet-101: Bottlenecks (3, 4, 23, 3). Other keyword arguments go to :class:`ResNet`."""
    return _resnet(Bottleneck, (3, 4, 23, 3), norm, **kwargs)


@register_backbone("resnext50_32x4d")
def resnext50_32x4d(*, norm: str = "bn", **kwargs: Any) -> ResNet:
    """ResNeXt-50 32x4d: ResNet-50 with 32 groups of width 4 in each 3x3 conv."""
    return _resnet(Bottleneck, (3, 4, 6, 3), norm, groups=32, width_per_group=4, **kwargs)


@register_backbone("resnext101_32x8d")
def resnext101_32x8d(*, norm: str = "bn", **kwargs: Any) -> ResNet:
    """ResNeXt-101 32x8d: ResNet-101 with 32 groups of width 8 in each 3x3 conv."""
    return _resnet(Bottleneck, (3, 4, 23, 3), norm, groups=32, width_per_group=8, **kwargs)


@register_backbone("wide_resnet50_2")
def wide_resnet50_2(*, norm: str = "bn", **kwargs: Any) -> ResNet:
    """Wide-ResNet-50-2: ResNet-50 with every bottleneck's inner width doubled."""
    return _resnet(Bottleneck, (3, 4, 6, 3), norm, width_per_group=2 * BASE_WIDTH, **kwargs)


@register_backbone("wide_resnet101_2")
def wide_resnet101_2(*, norm: str = "bn", **kwargs: Any) -> ResNet:
    """Wide-ResNet-101-2: ResNet-101 with every bottleneck's inner width doubled."""
    return _resnet(Bottleneck, (3, 4, 23, 3), norm, width_per_group=2 * BASE_WIDTH, **kwargs)
