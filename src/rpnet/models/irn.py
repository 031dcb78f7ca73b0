"""The inter-pixel relation network, IRNet (Ahn et al., CVPR 2019; docs/method.md stage 5).

Two small branches on a (by default frozen) backbone, both at 1/4 of the input:

- class boundary: every level (stem, block1..block4) reduced by 1x1 conv + GroupNorm + ReLU
  to :data:`EDGE_WIDTH` channels, upsampled to stride 4, concatenated, and a 1x1 conv to one
  boundary logit per pixel;
- displacement field: stem and block1 at stride 4 and block2..block4 brought to block2's
  stride are reduced, the deep three fused and upsampled to stride 4, then fused with the
  shallow two into a 2-channel (dy, dx) field, in stride-4 pixels.

Maps coarser than stride 4 are upsampled by their whole stride ratio and cropped (IRN's
Upsample-then-crop), so a coarse pixel always covers the same fine pixels whatever the input size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import LEVELS, Backbone, level_strides
from .backbones.base import STEM_STRIDE  # both outputs are at the stem's (and block1's) stride, the walk's

EDGE_WIDTH = 32  # IRN: every level reduced to 32 channels for the boundary branch
EDGE_GROUPS = 4  # GroupNorm groups of the boundary branch
# IRN's displacement widths per level (ResNet-50), kept for every backbone.
DISP_WIDTHS = {"stem": 64, "block1": 128, "block2": 256, "block3": 256, "block4": 256}
DISP_FUSE_WIDTH = 256  # width of the two fusion convs of the displacement branch
DISP_GROUPS_NARROW = 8  # IRN's GroupNorm groups at 64 channels (the stem's reduction)
DISP_GROUPS = 16  # IRN's GroupNorm groups at 128 channels and more
DISP_CHANNELS = 2  # (dy, dx)


def _groups(channels: int) -> int:
    """GroupNorm groups of a displacement-branch layer of the given width (IRN's choice)."""
    return DISP_GROUPS_NARROW if channels <= DISP_WIDTHS["stem"] else DISP_GROUPS


def _reduce(in_channels: int, out_channels: int, groups: int) -> nn.Sequential:
    """1x1 conv (no bias) + GroupNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


def _upsample_to(x: Tensor, factor: int, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling by an integer factor, then cropped to ``size`` (top-left aligned)."""
    if factor > 1:
        x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return x[..., :size[0], :size[1]]


class IRNOutput(NamedTuple):
    """What :meth:`IRNet.forward` returns, both at ceil(H/4) x ceil(W/4)."""

    edge: Tensor  # (B, 1, h, w) class-boundary logits (sigmoid gives the boundary probability)
    displacement: Tensor  # (B, 2, h, w) (dy, dx) to the instance centroid, in stride-4 pixels


class IRNParameterGroups(NamedTuple):
    """Trainable parameters by learning rate: IRN trains the boundary branch at 1x, displacement at 10x."""

    backbone: list[nn.Parameter]  # empty when the backbone is frozen (IRN's setting)
    boundary: list[nn.Parameter]
    displacement: list[nn.Parameter]


class IRNet(nn.Module):
    """Class-boundary and displacement branches on a :class:`~rpnet.models.backbones.Backbone`.

    Args:
        backbone: any registered backbone; IRN reads its five levels (``forward_features``),
            their ``channels`` and its ``output_stride``.
        freeze_backbone: IRN's setting: the backbone gets no gradients, runs without autograd
            and stays in eval mode under ``train()``; only the branches learn.
        boundary_prior: the boundary probability the untrained boundary branch gives every pixel
            (its output bias set to logit(p), as RetinaNet's prior init); None keeps PyTorch's
            default init (IRN's), near 0.5 everywhere.

    Buffers:
        displacement_mean: (2,) subtracted from the displacement field in eval mode (IRN's
            MeanShift); the training stage sets it to the mean field over training images.
    """

    def __init__(self, backbone: Backbone, freeze_backbone: bool = True, boundary_prior: float | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for param in backbone.parameters():
                param.requires_grad_(False)
        channels = backbone.channels
        self.strides = level_strides(backbone.output_stride)

        self.edge_reduce = nn.ModuleDict({lv: _reduce(channels[lv], EDGE_WIDTH, EDGE_GROUPS) for lv in LEVELS})
        self.edge_out = nn.Conv2d(len(LEVELS) * EDGE_WIDTH, 1, 1, bias=True)
        if boundary_prior is not None:
            if not 0 < boundary_prior < 1:
                raise ValueError(f"boundary_prior must be in (0, 1), got {boundary_prior}")
            # The logit of the prior: at the start every pixel's boundary probability is about p.
            nn.init.constant_(self.edge_out.bias, math.log(boundary_prior / (1 - boundary_prior)))

        self.disp_reduce = nn.ModuleDict({
            lv: _reduce(channels[lv], DISP_WIDTHS[lv], _groups(DISP_WIDTHS[lv])) for lv in LEVELS
        })
        deep_in = sum(DISP_WIDTHS[lv] for lv in LEVELS[2:])
        self.disp_fuse_deep = _reduce(deep_in, DISP_FUSE_WIDTH, _groups(DISP_FUSE_WIDTH))
        shallow_in = DISP_WIDTHS["stem"] + DISP_WIDTHS["block1"] + DISP_FUSE_WIDTH
        self.disp_fuse = _reduce(shallow_in, DISP_FUSE_WIDTH, _groups(DISP_FUSE_WIDTH))
        self.disp_out = nn.Conv2d(DISP_FUSE_WIDTH, DISP_CHANNELS, 1, bias=False)
        self.register_buffer("displacement_mean", torch.zeros(DISP_CHANNELS))

    def train(self, mode: bool = True) -> IRNet:
        super().train(mode)
        if self.freeze_backbone:
            # IRN keeps the frozen backbone in eval mode: ordinary batch norm must not
            # update its running statistics from IRN's batches.
            self.backbone.eval()
        return self

    def level_features(self, x: Tensor) -> dict[str, Tensor]:
        """The five levels the branches read: x (B, 3, H, W) -> {level: (B, C, H/s, W/s)}."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            return self.backbone.forward_features(x)._asdict()

    def forward(self, x: Tensor) -> IRNOutput:
        """x (B, 3, H, W) normalised images -> :class:`IRNOutput` at (ceil(H/4), ceil(W/4))."""
        feats = self.level_features(x)
        size = feats["stem"].shape[-2:]

        edges = [
            _upsample_to(self.edge_reduce[lv](feats[lv]), self.strides[lv] // STEM_STRIDE, size) for lv in LEVELS
        ]
        edge = self.edge_out(torch.cat(edges, dim=1))

        mid_size = feats["block2"].shape[-2:]
        mid_stride = self.strides["block2"]
        deep = [
            _upsample_to(self.disp_reduce[lv](feats[lv]), self.strides[lv] // mid_stride, mid_size)
            for lv in LEVELS[2:]
        ]
        deep = _upsample_to(self.disp_fuse_deep(torch.cat(deep, dim=1)), mid_stride // STEM_STRIDE, size)
        shallow = [self.disp_reduce[lv](feats[lv]) for lv in LEVELS[:2]]
        displacement = self.disp_out(self.disp_fuse(torch.cat([*shallow, deep], dim=1)))
        if not self.training:
            displacement = displacement - self.displacement_mean.view(1, DISP_CHANNELS, 1, 1)
        return IRNOutput(edge=edge, displacement=displacement)

    @torch.no_grad()
    def predict(self, image: Tensor, flip: bool = True, pad_to: int | None = None) -> IRNOutput:
        """Inference on one image as IRN's make_sem_seg_labels does it; call in eval mode.

        image (3, H, W) normalised -> IRNOutput with ``edge`` (1, h, w) boundary
        *probabilities* and ``displacement`` (2, h, w), h, w = ceil(H/4), ceil(W/4).
        ``flip`` averages the boundary logits of the image and its mirror image (the
        displacement is the unflipped image's). ``pad_to`` zero-pads the bottom and right up to
        that size, as IRN pads to its 512 training crop (smaller training images were padded
        the same way, so GroupNorm sees similar maps).
        """
        height, width = image.shape[-2:]
        # Flip before padding, as IRN does, so both copies have their padding on the right.
        x = torch.stack([image, image.flip(-1)]) if flip else image[None]
        if pad_to is not None:
            x = F.pad(x, (0, max(pad_to - width, 0), 0, max(pad_to - height, 0)))
        out = self(x)
        h, w = -(-height // STEM_STRIDE), -(-width // STEM_STRIDE)
        logits = out.edge[..., :h, :w]
        if flip:
            logits = (logits[:1] + logits[1:].flip(-1)) / 2
        return IRNOutput(edge=torch.sigmoid(logits[0]), displacement=out.displacement[0, :, :h, :w])

    def parameter_groups(self) -> IRNParameterGroups:
        """Trainable parameters per learning-rate group (frozen ones left out)."""
        def trainable(*modules: nn.Module) -> list[nn.Parameter]:
            return [p for m in modules for p in m.parameters() if p.requires_grad]

        return IRNParameterGroups(
            backbone=trainable(self.backbone),
            boundary=trainable(self.edge_reduce, self.edge_out),
            displacement=trainable(self.disp_reduce, self.disp_fuse_deep, self.disp_fuse, self.disp_out),
        )
