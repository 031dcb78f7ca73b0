"""The segmentation models trained on the pseudo labels (docs/method.md stages 8-9).

- :class:`DeepLabLargeFOV`: the paper's model (Chen et al., "Semantic Image Segmentation with
  Deep Convolutional Nets and Fully Connected CRFs", ICLR 2015, the LargeFOV variant, as used
  by DeepLab v2 and by IRN/RPNet on a ResNet). A dilated backbone at output stride 8, then
  fc6 = 3x3 conv at dilation 12 (the large field of view), fc7 = 1x1 conv, each followed by
  ReLU and dropout, and fc8 = 1x1 conv to the classes.
- :class:`DeepLabV3Plus`: the option users expect (Chen et al., ECCV 2018): ASPP on block4
  and a light decoder that mixes in block1.

Both return logits bilinearly upsampled to the input size from ``forward`` and the logits
at their own resolution from ``forward_logits`` (for multi-scale inference and the CRF).
``forward`` has no data-dependent Python branches, so ``torch.jit.trace`` and ONNX export
record the whole graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .backbones import Backbone, build_backbone

ALIGN_CORNERS = False  # the project's bilinear convention (rpnet.py, irn.py)

# DeepLab-LargeFOV (the VGG-16 model's fc6/fc7/fc8, kept as published).
LARGEFOV_CHANNELS = 1024  # width of fc6 and fc7
LARGEFOV_DILATION = 12  # fc6's dilation: the "large field of view" at output stride 8
LARGEFOV_DROPOUT = 0.5
CLASSIFIER_INIT_STD = 0.01  # DeepLab's Gaussian initialisation of the last (class) layer

# DeepLab-v3+.
ASPP_CHANNELS = 256
ASPP_RATES = (6, 12, 18)  # at ASPP_REFERENCE_STRIDE; scaled inversely with the output stride
ASPP_REFERENCE_STRIDE = 16
ASPP_DROPOUT = 0.5  # after the ASPP projection
DECODER_LOW_LEVEL_CHANNELS = 48  # block1 is reduced this far so that it does not outweigh ASPP
DECODER_CHANNELS = 256
DECODER_STRIDE = 4  # the decoder works at block1's resolution, 1/4 of the input
LOW_LEVEL = "block1"
HIGH_LEVEL = "block4"


def upsample_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of x (B, C, h, w) to the spatial size of ``like`` (..., H, W) -> (B, C, H, W)."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=ALIGN_CORNERS)


def _split_parameters(backbone: nn.Module, head: list[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters of the backbone and of the head modules, frozen ones left out."""
    backbone_params = [p for p in backbone.parameters() if p.requires_grad]
    head_params = [p for module in head for p in module.parameters() if p.requires_grad]
    return backbone_params, head_params


# ---------------------------------------------------------------------------- LargeFOV


class LargeFOVHead(nn.Module):
    """fc6 (3x3, dilation 12) - ReLU - dropout - fc7 (1x1) - ReLU - dropout - fc8 (1x1).

    (B, in_channels, h, w) -> (B, num_classes, h, w): padding equal to the dilation keeps
    the size, so a feature at (r, c) reaches the outputs (r + 12 i, c + 12 j), i, j in {-1, 0, 1}.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = LARGEFOV_CHANNELS,
                 dropout: float = LARGEFOV_DROPOUT, dilation: int = LARGEFOV_DILATION) -> None:
        super().__init__()
        self.fc6 = nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation)
        self.fc7 = nn.Conv2d(channels, channels, 1)
        self.fc8 = nn.Conv2d(channels, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        # Caffe's element-wise dropout, as DeepLab trained it (not whole-channel Dropout2d).
        self.dropout = nn.Dropout(dropout)
        for conv in (self.fc6, self.fc7):
            # fc6 and fc7 are new on a ResNet (they came from VGG's fc layers in DeepLab v1).
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.fc8.weight, std=CLASSIFIER_INIT_STD)
        nn.init.zeros_(self.fc8.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, h, w) -> class logits (B, num_classes, h, w)."""
        x = self.dropout(self.relu(self.fc6(x)))
        x = self.dropout(self.relu(self.fc7(x)))
        return self.fc8(x)


class DeepLabLargeFOV(nn.Module):
    """DeepLab-LargeFOV on a backbone: block4 features -> :class:`LargeFOVHead`.

    Args:
        backbone: a :class:`~rpnet.models.backbones.Backbone`; DeepLab uses output stride 8.
        num_classes: the number of classes, background included.
        head_channels: width of fc6 and fc7 (LargeFOV: 1024).
        dropout: dropout probability after fc6 and after fc7.

    Attributes:
        logit_stride: the input size over the size of :meth:`forward_logits`' output
            (the backbone's output stride).
    """

    def __init__(self, backbone: Backbone, num_classes: int, head_channels: int = LARGEFOV_CHANNELS,
                 dropout: float = LARGEFOV_DROPOUT) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.logit_stride = backbone.output_stride
        self.head = LargeFOVHead(backbone.channels[HIGH_LEVEL], num_classes, head_channels, dropout)

    def forward_logits(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> logits (B, num_classes, ceil(H/s), ceil(W/s)), s = ``logit_stride`` (8 in DeepLab)."""
        return self.head(self.backbone.forward_features(x).block4)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> logits (B, num_classes, H, W), upsampled bilinearly."""
        return upsample_to(self.forward_logits(x), x)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, head parameters) for the 1x / 10x learning rates.

        The whole head (fc6-fc8) is new on the backbone, so all of it takes the 10x rate.
        Frozen parameters (``requires_grad=False``) are in neither list.
        """
        return _split_parameters(self.backbone, [self.head])


# ---------------------------------------------------------------------------- DeepLab-v3+


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1,
                  dilation: int = 1) -> list[nn.Module]:
    """A bias-free conv (padding keeps the size), batch norm and ReLU."""
    padding = dilation * (kernel_size - 1) // 2
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class ASPPConv(nn.Sequential):
    """One atrous branch: 3x3 conv at dilation ``rate`` - BN - ReLU, (B, C_in, h, w) -> (B, C_out, h, w)."""

    def __init__(self, in_channels: int, out_channels: int, rate: int) -> None:
        super().__init__(*_conv_bn_relu(in_channels, out_channels, 3, rate))


class ASPPPooling(nn.Module):
    """The image-level branch: global average, 1x1 conv - BN - ReLU, broadcast back to (h, w).

    Its batch norm sees one value per channel and image, so training needs a batch of at
    least 2 (as in every DeepLab-v3 implementation); evaluation works on one image.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = nn.Sequential(*_conv_bn_relu(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, h, w) -> (B, C_out, h, w), constant over each image."""
        pooled = self.project(x.mean(dim=(2, 3), keepdim=True))
        return upsample_to(pooled, x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, one :class:`ASPPConv` per rate and
    :class:`ASPPPooling`, concatenated and projected by 1x1 conv - BN - ReLU - dropout.

    (B, in_channels, h, w) -> (B, out_channels, h, w).
    """

    def __init__(self, in_channels: int, rates: tuple[int, ...], out_channels: int = ASPP_CHANNELS,
                 dropout: float = ASPP_DROPOUT) -> None:
        super().__init__()
        self.rates = tuple(rates)
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(in_channels, out_channels))]
        branches += [ASPPConv(in_channels, out_channels, rate) for rate in self.rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            *_conv_bn_relu(len(branches) * out_channels, out_channels), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, h, w) -> (B, out_channels, h, w)."""
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class Decoder(nn.Module):
    """DeepLab-v3+'s decoder: block1 reduced to 48 channels, concatenated with the upsampled
    ASPP output, two 3x3 conv - BN - ReLU of 256 channels, and a 1x1 conv to the classes.

    low_level (B, C_low, h1, w1), high_level (B, C_high, h, w) -> logits (B, num_classes, h1, w1).
    """

    def __init__(self, low_level_channels: int, high_level_channels: int, num_classes: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(*_conv_bn_relu(low_level_channels, DECODER_LOW_LEVEL_CHANNELS))
        self.fuse = nn.Sequential(
            *_conv_bn_relu(DECODER_LOW_LEVEL_CHANNELS + high_level_channels, DECODER_CHANNELS, 3),
            *_conv_bn_relu(DECODER_CHANNELS, DECODER_CHANNELS, 3),
        )
        self.classifier = nn.Conv2d(DECODER_CHANNELS, num_classes, 1)

    def forward(self, low_level: Tensor, high_level: Tensor) -> Tensor:
        """See the class docstring for shapes."""
        low = self.reduce(low_level)
        fused = self.fuse(torch.cat([low, upsample_to(high_level, low)], dim=1))
        return self.classifier(fused)


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """The ASPP rates for a backbone's output stride: (6, 12, 18) at 16, doubled at 8, halved at 32."""
    scaled = [rate * ASPP_REFERENCE_STRIDE for rate in ASPP_RATES]
    if any(value % output_stride for value in scaled):
        raise ConfigError(f"no ASPP rates for output_stride {output_stride}; "
                          f"rates {ASPP_RATES} at {ASPP_REFERENCE_STRIDE} must scale to integers")
    return tuple(value // output_stride for value in scaled)  # type: ignore[return-value]


class DeepLabV3Plus(nn.Module):
    """DeepLab-v3+: :class:`ASPP` on block4 and a :class:`Decoder` at block1's resolution.

    Args:
        backbone: a :class:`~rpnet.models.backbones.Backbone` at output stride 8 or 16.
        num_classes: the number of classes, background included.
        atrous_rates: the ASPP rates; None takes (6, 12, 18) scaled to the backbone's
            output stride (:func:`aspp_rates`).

    Attributes:
        logit_stride: 4, the stride of :meth:`forward_logits`' output (block1's).
    """

    def __init__(self, backbone: Backbone, num_classes: int, atrous_rates: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if atrous_rates is None:
            atrous_rates = aspp_rates(backbone.output_stride)
        self.backbone = backbone
        self.num_classes = num_classes
        self.logit_stride = DECODER_STRIDE
        channels = backbone.channels
        self.aspp = ASPP(channels[HIGH_LEVEL], atrous_rates)
        self.decoder = Decoder(channels[LOW_LEVEL], ASPP_CHANNELS, num_classes)
        for module in (*self.aspp.modules(), *self.decoder.modules()):
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_logits(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> logits (B, num_classes, ceil(H/4), ceil(W/4)) at block1's resolution."""
        feats = self.backbone.forward_features(x)
        return self.decoder(feats.block1, self.aspp(feats.block4))

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> logits (B, num_classes, H, W), upsampled bilinearly."""
        return upsample_to(self.forward_logits(x), x)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, ASPP + decoder parameters) for the 1x / 10x learning rates;
        frozen parameters are in neither list."""
        return _split_parameters(self.backbone, [self.aspp, self.decoder])


# ---------------------------------------------------------------------------- lookup

SEGMENTATION_MODELS: dict[str, Callable[[Backbone, int], nn.Module]] = {
    "deeplab_largefov": DeepLabLargeFOV,
    "deeplabv3plus": DeepLabV3Plus,
}


def build_segmentation_model(name: str, *, backbone: str, num_classes: int, output_stride: int = 8,
                             pretrained: str | Path | None = None, norm: str = "bn") -> nn.Module:
    """A segmentation model by name on a named backbone, with default head settings.

    Args:
        name: a key of :data:`SEGMENTATION_MODELS`.
        backbone: a backbone name (:data:`rpnet.models.backbones.BACKBONES`).
        num_classes: the number of classes, background included.
        output_stride: the backbone's output stride, 8 (DeepLab's) or 16.
        pretrained: ImageNet weights for the backbone (see :func:`build_backbone`), or None.
        norm: the backbone's batch norm, "bn" or "frozen"; the head's is always trainable.

    Returns:
        the model; ``model(x)`` maps (B, 3, H, W) to logits (B, num_classes, H, W).

    Raises:
        ConfigError: an unknown model, backbone, norm or output stride, or num_classes < 1.
    """
    if name not in SEGMENTATION_MODELS:
        raise ConfigError(f"unknown segmentation model {name!r}; choose from {sorted(SEGMENTATION_MODELS)}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    net = build_backbone(backbone, output_stride=output_stride, norm=norm, pretrained=pretrained)
    return SEGMENTATION_MODELS[name](net, num_classes)

