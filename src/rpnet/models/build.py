"""The models the config describes: the classifier (stage 1), IRN (stage 5), the segmentation model (stage 8).

Stages build their models here, never from each other's modules; later stages that start from the
classifier's backbone read it with :func:`load_classifier_backbone`.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ..config import ModelConfig, TrainSegConfig
from ..errors import ConfigError, RpnetError
from .backbones import build_backbone
from .deeplab import build_segmentation_model
from .irn import IRNet
from .published import pretrained_file
from .rpnet import PrototypeSettings, RPNetClassifier
from .weights import check_state_dict, read_weights

CLASSIFIER_BACKBONE_PREFIX = "backbone."  # the backbone's keys in the classifier's weights


def build_classifier(model: ModelConfig, num_classes: int, *, load_pretrained: bool = True) -> RPNetClassifier:
    """The classifier a :class:`ModelConfig` describes (ImageNet weights loaded when given)."""
    pretrained = model.pretrained is not None
    frozen_bn = pretrained if model.freeze_bn is None else model.freeze_bn
    frozen_stem = pretrained if model.freeze_stem is None else model.freeze_stem
    detach_block2 = pretrained if model.detach_block2 is None else model.detach_block2
    backbone = build_backbone(
        model.backbone, output_stride=model.output_stride, norm="frozen" if frozen_bn else "bn",
        freeze_stem=frozen_stem, pretrained=pretrained_file(model.pretrained, model.backbone) if load_pretrained else None,
        dilated=model.block4 == "dilated",
    )
    settings = PrototypeSettings.from_config(model) if model.prototypes else None
    return RPNetClassifier(backbone, num_classes, settings, detach_block2=detach_block2)


def classifier_backbone_state(source: Path) -> dict[str, Tensor]:
    """The backbone's tensors of the classifier's weights file ``source``, the prefix removed and the head
    (classifier and prototype layers) left out; batch norm's running statistics stay."""
    return {k.removeprefix(CLASSIFIER_BACKBONE_PREFIX): v for k, v in read_weights(source).items()
            if k.startswith(CLASSIFIER_BACKBONE_PREFIX)}


def load_classifier_backbone(backbone: nn.Module, source: Path, *, missing_hint: str, mismatch_hint: str) -> Path:
    """Copy the backbone of the classifier's weights file ``source`` into ``backbone``.

    Later stages start from it when there are no ImageNet weights. ``missing_hint`` ends the error
    when the file is absent, ``mismatch_hint`` the one when its keys or shapes do not fit. Returns ``source``.
    """
    if not source.is_file():
        raise RpnetError(f"no classifier weights at {source} {missing_hint}")
    state = classifier_backbone_state(source)
    problems = check_state_dict(backbone, state)
    if problems:
        raise ConfigError(f"{source}: the classifier's backbone {mismatch_hint}; " + "; ".join(problems))
    backbone.load_state_dict(state, strict=False)  # check_state_dict has refused every real difference
    return source


def build_irn(model: ModelConfig, *, train_backbone: bool = False, boundary_prior: float | None = None) -> IRNet:
    """An IRNet on a randomly initialised backbone of ``model.backbone``, frozen unless ``train_backbone``.

    Batch norm uses running statistics throughout (IRN's FixedBatchNorm) and the stem stays frozen
    either way; the state-dict keys are those of ordinary batch norm. ``boundary_prior``: see :class:`IRNet`.
    """
    backbone = build_backbone(model.backbone, output_stride=model.output_stride, norm="frozen", freeze_stem=True,
                              dilated=model.block4 == "dilated")
    return IRNet(backbone, freeze_backbone=not train_backbone, boundary_prior=boundary_prior)


def seg_backbone(seg: TrainSegConfig, model: ModelConfig) -> str:
    """The segmentation model's backbone name: ``train_seg.backbone``, else ``model.backbone``."""
    return seg.backbone or model.backbone


def build_seg_model(seg: TrainSegConfig, model: ModelConfig, num_classes: int, init: str,
                    classifier_weights: Path) -> nn.Module:
    """The model ``train_seg`` describes with ``num_classes`` outputs, its backbone initialised per ``init``
    (``pretrained``: ``model.pretrained``; ``classifier``: the backbone of ``classifier_weights``; ``scratch``)."""
    pretrained = init == "pretrained"
    if pretrained and model.pretrained is None:
        raise ConfigError("train_seg.backbone_init is 'pretrained' but model.pretrained is null; "
                          "set model.pretrained or use backbone_init 'classifier', 'scratch' or 'auto'")
    frozen_bn = pretrained if seg.freeze_bn is None else seg.freeze_bn
    net = build_segmentation_model(seg.architecture, backbone=seg_backbone(seg, model), num_classes=num_classes,
                                   output_stride=seg.output_stride, norm="frozen" if frozen_bn else "bn",
                                   pretrained=pretrained_file(model.pretrained, seg_backbone(seg, model))
                                   if pretrained else None)
    if init == "classifier":
        load_classifier_backbone(
            net.backbone, classifier_weights,
            missing_hint="to start the segmentation backbone from: run train-cam first, or set "
                         "train_seg.backbone_init to 'scratch' or 'pretrained'",
            mismatch_hint=f"does not fit a {seg_backbone(seg, model)} (train_seg.backbone must be model.backbone "
                          "to start from the classifier)")
    return net
