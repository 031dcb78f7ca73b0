"""The RPNet classifier (paper Sec. III-C..E, docs/method.md stage 1) and its plain-CAM baseline.

One module serves both: with ``prototypes=None`` it is IRN's CAM classifier (backbone, global
average pooling, a bias-free 1x1 conv classifier) and nothing else; with a
:class:`PrototypeSettings` it adds the region prototype module, whose enhanced branch shares
the classifier. The original branch is computed the same way in both, so the baseline's
logits and CAMs are RPNet's original-branch logits and CAMs for the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import prototypes as P
from ..ops.cam import class_activation_maps

LAST_LEVEL = "block4"  # f_N: the last block, the one the classifier reads


@dataclass(frozen=True)
class PrototypeSettings:
    """The prototype module's hyper-parameters (docs/method.md defaults)."""

    levels: tuple[str, ...] = ("block2", "block4")  # Table IV
    group_size: int = 2  # K, Table VII
    alpha: float = 0.3  # eq. 6 threshold on the confidence map
    beta: float = 0.5  # eq. 6 Bernoulli keep probability, Table V
    sigma: float | None = 3.0  # eq. 9; None switches the Gaussian filter off (Table VI)
    embed_dim: int = 256  # eq. 3's D
    compare: str = "last_level"  # eq. 7: prototypes vs O_N ("last_level") or vs their own level
    activation_norm: str = "channel"  # eq. 3: divide by each channel's max ("channel") or the map's ("global")

    def __post_init__(self) -> None:
        if self.compare not in ("last_level", "same_level"):
            raise ValueError(f"compare must be 'last_level' or 'same_level', got {self.compare!r}")
        if self.activation_norm not in ("channel", "global"):
            raise ValueError(f"activation_norm must be 'channel' or 'global', got {self.activation_norm!r}")


class ClassifierOutput(NamedTuple):
    """What :meth:`RPNetClassifier.forward` returns; the enhanced fields are None for the baseline."""

    logits: Tensor  # (B, C) original branch: classifier(GAP(f_N))
    features: Tensor  # (B, D_N, h, w) f_N
    logits_enhanced: Tensor | None = None  # (B, C) classifier(GAP(f'_N)), eq. 10-11
    features_enhanced: Tensor | None = None  # (B, D_N, h, w) f'_N = G(F) * f_N, eq. 10
    foreground: Tensor | None = None  # (B, 1, h, w) F of eq. 8 (before normalisation and smoothing)


class RPNetClassifier(nn.Module):
    """Backbone + (optional) region prototype module + one shared bias-free 1x1 classifier.

    ``backbone`` is a :class:`~rpnet.models.backbones.Backbone` (block outputs via ``forward_features``).
    ``detach_block2`` keeps IRN's choice of no gradient into block1-2.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        prototypes: PrototypeSettings | None = None,
        detach_block2: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.settings = prototypes
        self.detach_block2 = detach_block2
        channels = backbone.channels
        self.classifier = nn.Conv2d(channels[LAST_LEVEL], num_classes, 1, bias=False)
        self.embeddings = nn.ModuleDict()
        if prototypes is not None:
            needed = set(prototypes.levels)
            if prototypes.compare == "last_level":
                needed.add(LAST_LEVEL)  # O_N is compared against even when block4 gives no prototype
            for level in sorted(needed):
                # eq. 3: one 1x1 conv per level into D channels
                self.embeddings[level] = nn.Conv2d(channels[level], prototypes.embed_dim, 1, bias=False)

    # ------------------------------------------------------------------ pieces

    def block_features(self, x: Tensor) -> dict[str, Tensor]:
        """f_1..f_4 of the backbone; block2 detached when ``detach_block2`` (IRN's CAM net)."""
        f = self.backbone.forward_features(x, detach=("block2",) if self.detach_block2 else ())
        return {"block1": f.block1, "block2": f.block2, "block3": f.block3, "block4": f.block4}

    def classify(self, features: Tensor) -> Tensor:
        """Eq. 11's classifier: conv1x1(GAP(f)) -> (B, C)."""
        pooled = features.mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def cams(self, features: Tensor) -> Tensor:
        """Unnormalised CAMs relu(Theta^T f) (eq. 1) of features (B, D, h, w) -> (B, C, h, w)."""
        return class_activation_maps(features, self.classifier.weight)

    def _embed(self, level: str, feat: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Eq. 3-4 at one level: embedding O_n and confidence O'_n, both at block4's size."""
        norm_act = P.normalized_activation(feat, per_channel=self.settings.activation_norm == "channel")
        if norm_act.shape[-2:] != size:
            norm_act = F.interpolate(norm_act, size=size, mode="bilinear", align_corners=False)
        return self.embeddings[level](norm_act), P.confidence_map(norm_act)

    def foreground_map(self, feats: dict[str, Tensor], group_size: int) -> Tensor:
        """Eq. 3-8: the foreground probability map F for every image, (B, 1, h, w)."""
        s = self.settings
        assert s is not None
        size = feats[LAST_LEVEL].shape[-2:]
        keep = s.beta if self.training else None  # eq. 6: nothing is dropped at inference
        embedded = {level: self._embed(level, feats[level], size) for level in self.embeddings}
        protos, valid = [], []
        for level in s.levels:
            emb, conf = embedded[level]
            p, v = P.region_prototypes(emb, P.prototype_mask(conf, s.alpha, keep))  # eq. 5-6
            protos.append(p)
            valid.append(v)
        if s.compare == "last_level":
            gp, gv = P.group_prototypes(torch.stack(protos), torch.stack(valid), group_size)
            return P.region_similarity(embedded[LAST_LEVEL][0], gp, gv, group_size)  # eq. 7-8
        per_level = []
        for level, p, v in zip(s.levels, protos, valid):
            gp, gv = P.group_prototypes(p[None], v[None], group_size)
            per_level.append(P.region_similarity(embedded[level][0], gp, gv, group_size))
        return torch.stack(per_level).amax(dim=0)

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, group_size: int | None = None) -> ClassifierOutput:
        """x (B, 3, H, W), B a multiple of ``group_size`` (default: the settings' K)."""
        feats = self.block_features(x)
        f_n = feats[LAST_LEVEL]
        logits = self.classify(f_n)
        if self.settings is None:
            return ClassifierOutput(logits=logits, features=f_n)
        k = group_size or self.settings.group_size
        foreground = self.foreground_map(feats, k)
        weights = P.enhancement_weights(foreground, self.settings.sigma)  # eq. 9
        enhanced = weights * f_n  # eq. 10
        return ClassifierOutput(
            logits=logits, features=f_n, logits_enhanced=self.classify(enhanced),
            features_enhanced=enhanced, foreground=foreground,
        )

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, new layers) for the 1x / 10x learning rates; frozen ones left out."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        new = [p for m in (self.classifier, self.embeddings) for p in m.parameters() if p.requires_grad]
        return backbone, new
