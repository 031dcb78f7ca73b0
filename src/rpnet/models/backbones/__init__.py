"""Backbones: the seam the models read (:mod:`.base`), the registry, and the families.

:func:`build_backbone` builds any registered backbone by name. The families are the other
modules of this package, each registering its names with
:func:`~rpnet.models.backbones.base.register_backbone`: ``resnet`` (ResNet, ResNeXt,
Wide-ResNet, torchvision's keys) and ``convnext`` (ConvNeXt, timm's keys). They are found
by listing the package, so adding a family is adding one module here (docs/backbones.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from rpnet.errors import ConfigError
from rpnet.models.weights import load_backbone_weights

from .base import (
    BACKBONES,
    LEVELS,
    NORMS,
    OUTPUT_STRIDES,
    Backbone,
    BackboneFeatures,
    check_norm,
    check_output_stride,
    level_strides,
    register_backbone,
)

# Every module of the package but the seam is a family; importing it registers its backbones.
for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

# The ResNet names other modules have always imported from here.
from .resnet import DILATE_FOR_OUTPUT_STRIDE, STEM_CHANNELS, FrozenBatchNorm2d, ResNet  # noqa: E402

__all__ = [
    "BACKBONES", "LEVELS", "NORMS", "OUTPUT_STRIDES", "Backbone", "BackboneFeatures", "DILATE_FOR_OUTPUT_STRIDE",
    "FrozenBatchNorm2d", "ResNet", "STEM_CHANNELS", "build_backbone", "check_norm", "check_output_stride",
    "level_strides", "register_backbone",
]


def build_backbone(name: str, *, output_stride: int = 16, norm: str = "bn",
                   freeze_stem: bool = False, pretrained: str | Path | None = None, dilated: bool = True) -> Backbone:
    """A headless backbone by name, optionally with ImageNet weights from a file.

    Args:
        name: a key of :data:`BACKBONES`.
        output_stride: 32, 16 or 8 (block4 at H/output_stride).
        norm: "bn" (batch statistics while training) or "frozen" (running statistics only,
            :class:`FrozenBatchNorm2d`); a family without batch statistics builds the same
            layers for both (see :data:`~rpnet.models.backbones.base.NORMS`).
        freeze_stem: freeze the parameters computing the stem level (ResNet: conv1 and bn1,
            bn1 then with running statistics). The classifier (rpnet.models.build) freezes the
            stem and uses norm="frozen" when pretrained weights are loaded, and trains both
            ("bn") from scratch, unless model.freeze_stem / model.freeze_bn say otherwise.
        pretrained: a .pth/.pt/.safetensors state dict in the family's key names (ResNet:
            torchvision's, ConvNeXt: timm's); its ImageNet head (``fc.*``, ``head.*``) is
            ignored. Any other missing, unexpected or misshapen key is a ConfigError.
        dilated: the stages kept at stride 1 for ``output_stride`` dilate their convs (DeepLab's
            atrous networks); False keeps them undilated (IRN's CAM network: ``model.block4``).

    Returns:
        a :class:`Backbone` without head, whose forward gives :class:`BackboneFeatures`.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    check_norm(norm)
    check_output_stride(output_stride)
    model = BACKBONES[name](num_classes=None, output_stride=output_stride, norm=norm, freeze_stem=freeze_stem,
                            dilated=dilated)
    if pretrained is not None:
        load_backbone_weights(model, pretrained, ignore=model.head_prefixes)
    return model
