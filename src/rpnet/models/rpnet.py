"""The RPNet classifier (paper Sec. III-C..E, docs/method.md stage 1) and its plain-CAM baseline.

One module serves both: with ``prototypes=None`` it is IRN's CAM classifier (backbone, global
average pooling, a bias-free 1x1 conv classifier) and nothing else; with a
:class:`PrototypeSettings` it adds the region prototype module, whose enhanced branch shares
the classifier. The original branch is computed the same way in both, so the baseline's
logits and CAMs are RPNet's original-branch logits and CAMs for the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import prototypes as P
from ..ops.cam import class_activation_maps, multiscale_mean_cams
from .non_local import NonLocalBlock

if TYPE_CHECKING:
    from ..config import ModelConfig

LAST_LEVEL = "block4"  # f_N: the last block, the one the classifier reads


@dataclass(frozen=True)
class PrototypeSettings:
    """The prototype module's hyper-parameters. No defaults here: :class:`~rpnet.config.ModelConfig` is
    their one home, and :meth:`from_config` reads them from it (each variant key resolved)."""

    levels: tuple[str, ...]  # Table IV
    group_size: int  # K, Table VII
    alpha: float  # eq. 6 threshold on the confidence map
    beta: float  # eq. 6 Bernoulli keep probability, Table V
    sigma: float | None  # eq. 9; None switches the Gaussian filter off (Table VI)
    embed_dim: int  # eq. 3's D
    compare: str  # eq. 7: prototypes vs O_N ("last_level") or vs their own level ("same_level")
    activation_norm: str  # eq. 3: divide by each channel's max ("channel") or the map's ("global")
    # The released code's reading (docs/method.md, "The released code's reading"):
    prototype_masks: str  # eq. 5-6: "thinned" (M * Z) or "full_and_thinned" (M and M * Z)
    prototype_source: str  # eq. 3-6: "embedding" (O_n, O'_n) or "features" (the features themselves)
    foreground_gain: float  # eq. 9: F / max F times this before the Gaussian
    gaussian_window: str  # eq. 9: "3sigma_replicate" or "5x5_zeros"
    reduce_dim: int  # a 1x1 conv of block4 into this many channels before everything; 0: none
    non_local: bool  # a non-local block on each branch before the classifier
    role_heads: bool  # a classifier (and non-local blocks) per position in the group
    ls_target_scales: tuple[float, ...]  # eq. 13's enhanced side: mean relu CAM over these input scales

    def __post_init__(self) -> None:
        choices = {"compare": ("last_level", "same_level"), "activation_norm": ("channel", "global"),
                   "prototype_masks": ("thinned", "full_and_thinned"),
                   "prototype_source": ("embedding", "features"), "gaussian_window": P.GAUSSIAN_WINDOWS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if 1.0 not in self.ls_target_scales:
            raise ValueError(f"ls_target_scales must hold 1.0, got {self.ls_target_scales}")

    @classmethod
    def from_config(cls, model: ModelConfig) -> PrototypeSettings:
        """The settings a model config describes, each variant key resolved (:meth:`ModelConfig.resolve`)."""
        return cls(
            levels=model.prototype_levels, group_size=model.group_size, alpha=model.alpha, beta=model.beta,
            sigma=model.sigma if model.gaussian else None, embed_dim=model.embed_dim,
            activation_norm=model.activation_norm,
            **{name: model.resolve(name) for name in (
                "compare", "prototype_masks", "prototype_source", "foreground_gain", "gaussian_window",
                "reduce_dim", "non_local", "role_heads", "ls_target_scales")},
        )


class ClassifierOutput(NamedTuple):
    """What :meth:`RPNetClassifier.forward` returns; the enhanced fields are None for the baseline."""

    logits: Tensor  # (B, C) original branch: classifier(GAP(f_N))
    features: Tensor  # (B, D_N, h, w) f_N
    logits_enhanced: Tensor | None = None  # (B, C) classifier(GAP(f'_N)), eq. 10-11
    features_enhanced: Tensor | None = None  # (B, D_N, h, w) f'_N = G(F) * f_N, eq. 10
    foreground: Tensor | None = None  # (B, 1, h, w) F of eq. 8 (before normalisation and smoothing)
    # Set when the model has role heads or a multi-scale L_s target (else the loss computes the CAMs
    # from ``features`` and the one classifier): relu CAMs, each image by its own role's classifier.
    cams: Tensor | None = None  # (B, C, h, w) of the original branch
    cams_enhanced: Tensor | None = None  # (B, C, h, w) eq. 13's enhanced side (mean over ls_target_scales)


class RPNetClassifier(nn.Module):
    """Backbone + (optional) region prototype module + one shared bias-free 1x1 classifier.

    ``backbone`` is a :class:`~rpnet.models.backbones.Backbone` (block outputs via ``forward_features``).
    ``detach_block2`` keeps IRN's choice of no gradient into block1-2.

    With the released code's keys (docs/method.md, "The released code's reading") the prototype model
    also has: ``reduce``, a 1x1 conv of block4 whose output is f_N for everything after it;
    ``non_local``, a non-local block per branch ("original", "enhanced") and role; and
    ``partner_classifiers``, the classifiers of group positions 1..K-1 (``classifier`` is position
    0's, the one inference uses). The baseline (``prototypes=None``) never has them.
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
        channels = dict(backbone.channels)
        if prototypes is not None and prototypes.reduce_dim:
            self.reduce = nn.Conv2d(channels[LAST_LEVEL], prototypes.reduce_dim, 1, bias=False)
            channels[LAST_LEVEL] = prototypes.reduce_dim
        self.classifier = nn.Conv2d(channels[LAST_LEVEL], num_classes, 1, bias=False)
        self.embeddings = nn.ModuleDict()
        if prototypes is not None:
            roles = prototypes.group_size if prototypes.role_heads else 1
            if roles > 1:
                self.partner_classifiers = nn.ModuleList(
                    nn.Conv2d(channels[LAST_LEVEL], num_classes, 1, bias=False) for _ in range(roles - 1))
            if prototypes.non_local:
                self.non_local = nn.ModuleDict({
                    branch: nn.ModuleList(NonLocalBlock(channels[LAST_LEVEL]) for _ in range(roles))
                    for branch in ("original", "enhanced")})
            needed = set(prototypes.levels)
            if prototypes.compare == "last_level":
                needed.add(LAST_LEVEL)  # O_N is compared against even when block4 gives no prototype
            if prototypes.prototype_source == "embedding":
                for level in sorted(needed):
                    # eq. 3: one 1x1 conv per level into D channels
                    self.embeddings[level] = nn.Conv2d(channels[level], prototypes.embed_dim, 1, bias=False)

    # ------------------------------------------------------------------ pieces

    def block_features(self, x: Tensor) -> dict[str, Tensor]:
        """f_1..f_4 of the backbone; block2 detached when ``detach_block2`` (IRN's CAM net).

        block4 is the reduced f_N when the model has ``reduce``.
        """
        f = self.backbone.forward_features(x, detach=("block2",) if self.detach_block2 else ())
        f4 = self.reduce(f.block4) if hasattr(self, "reduce") else f.block4
        return {"block1": f.block1, "block2": f.block2, "block3": f.block3, "block4": f4}

    def classify(self, features: Tensor) -> Tensor:
        """Eq. 11's classifier: conv1x1(GAP(f)) -> (B, C)."""
        pooled = features.mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)

    def cams(self, features: Tensor) -> Tensor:
        """Unnormalised CAMs relu(Theta^T f) (eq. 1) of features (B, D, h, w) -> (B, C, h, w)."""
        return class_activation_maps(features, self.classifier.weight)

    def cam_features(self, x: Tensor) -> Tensor:
        """The original branch's classifier input for images on their own (inference): f_N, after the
        original branch's non-local block of group position 0 when the model has one."""
        f_n = self.block_features(x)[LAST_LEVEL]
        if hasattr(self, "non_local"):
            f_n = self.non_local["original"][0](f_n)
        return f_n

    def draw_keep(self, mask: Tensor, keep: float, level: str) -> Tensor:
        """Eq. 6's Z ~ Bernoulli(keep), one draw per position of ``mask`` (B, 1, h, w) -> 0/1 of its shape.

        Used by the "full_and_thinned" masks; ``level`` names the prototype level being thinned (a
        test can replace this method to feed known draws, e.g. to compare with another implementation).
        """
        return (torch.rand(mask.shape, device=mask.device) < keep).to(mask.dtype)

    def _roles(self) -> int:
        return 1 + len(self.partner_classifiers) if hasattr(self, "partner_classifiers") else 1

    def _by_role(self, fns: list[Callable[[Tensor], Tensor]], x: Tensor, group_size: int) -> Tensor:
        """Apply fns[r] to the images at position r of their group (B = G * K, a group K consecutive images)."""
        k = min(group_size, len(fns))
        if k == 1:
            return fns[0](x)
        if group_size > len(fns):
            raise ValueError(f"the model has heads for groups of {len(fns)}, got groups of {group_size}")
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} images is not a whole number of groups of {k}")
        parts = [fns[r](x[r::k]) for r in range(k)]  # each (G, ...)
        return torch.stack(parts, dim=1).flatten(0, 1)

    def _heads(self) -> list[nn.Conv2d]:
        return [self.classifier, *getattr(self, "partner_classifiers", [])]

    def _non_local(self, branch: str, features: Tensor, group_size: int) -> Tensor:
        if not hasattr(self, "non_local"):
            return features
        return self._by_role(list(self.non_local[branch]), features, group_size)

    def _classify_roles(self, features: Tensor, group_size: int) -> Tensor:
        if self._roles() == 1:
            return self.classify(features)
        fns = [lambda f, h=h: h(f.mean(dim=(2, 3), keepdim=True)).flatten(1) for h in self._heads()]
        return self._by_role(fns, features, group_size)

    def _class_maps(self, features: Tensor, group_size: int) -> Tensor:
        """Raw class maps Theta^T f (before the ReLU), each image by its role's classifier."""
        return self._by_role([lambda f, h=h: F.conv2d(f, h.weight) for h in self._heads()], features, group_size)

    def _embed(self, level: str, feat: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Eq. 3-4 at one level: embedding O_n and confidence O'_n, both at block4's size."""
        norm_act = P.normalized_activation(feat, per_channel=self.settings.activation_norm == "channel")
        if norm_act.shape[-2:] != size:
            norm_act = F.interpolate(norm_act, size=size, mode="bilinear", align_corners=False)
        return self.embeddings[level](norm_act), P.confidence_map(norm_act)

    def _level_masks(self, level: str, conf_or_mask: Tensor, keep: float | None) -> list[Tensor]:
        """Eq. 6's masks of one level: [M * Z] ("thinned") or [M, M * Z] ("full_and_thinned")."""
        s = self.settings
        if s.prototype_source == "features":
            full = conf_or_mask  # already the 0/1 confident mask
        elif s.prototype_masks == "thinned":
            return [P.prototype_mask(conf_or_mask, s.alpha, keep)]
        else:
            full = P.prototype_mask(conf_or_mask, s.alpha, None)
        if s.prototype_masks == "thinned":
            return [full * self.draw_keep(full, keep, level) if keep is not None and keep < 1.0 else full]
        thinned = full * self.draw_keep(full, keep, level) if keep is not None and keep < 1.0 else full
        return [full, thinned]

    def foreground_map(self, feats: dict[str, Tensor], group_size: int) -> Tensor:
        """Eq. 3-8: the foreground probability map F for every image, (B, 1, h, w)."""
        s = self.settings
        assert s is not None
        size = feats[LAST_LEVEL].shape[-2:]
        keep = s.beta if self.training else None  # eq. 6: nothing is dropped at inference
        if s.prototype_source == "features":
            # The released code's reading: prototypes are masked means of the features themselves
            # (other levels bilinearly resized to block4's size, corners aligned), all from one
            # confident mask of f_N; an empty mask gives a zero prototype (cosine 0), and F is not clipped.
            mask = P.feature_confident_mask(feats[LAST_LEVEL], s.alpha)
            embedded = {level: (feats[level] if level == LAST_LEVEL else F.interpolate(
                feats[level], size=size, mode="bilinear", align_corners=True), mask) for level in s.levels}
        else:
            embedded = {level: self._embed(level, feats[level], size) for level in self.embeddings}
        clip = s.prototype_source == "embedding"
        protos, valid, owner = [], [], []
        for level in s.levels:
            emb, conf = embedded[level]
            for m in self._level_masks(level, conf, keep):
                p, v = P.region_prototypes(emb, m)  # eq. 5-6
                protos.append(p)
                valid.append(v if clip else torch.ones_like(v))
                owner.append(level)
        if s.compare == "last_level":
            gp, gv = P.group_prototypes(torch.stack(protos), torch.stack(valid), group_size)
            return P.region_similarity(embedded[LAST_LEVEL][0], gp, gv, group_size, clip=clip)  # eq. 7-8
        per_level = []
        for level in s.levels:
            mine = [i for i, o in enumerate(owner) if o == level]
            gp, gv = P.group_prototypes(torch.stack([protos[i] for i in mine]), torch.stack([valid[i] for i in mine]),
                                        group_size)
            per_level.append(P.region_similarity(embedded[level][0], gp, gv, group_size, clip=clip))
        return torch.stack(per_level).amax(dim=0)

    # ------------------------------------------------------------------ forward

    def _forward_once(self, x: Tensor, k: int) -> ClassifierOutput:
        feats = self.block_features(x)
        f_n = feats[LAST_LEVEL]
        if self.settings is None:
            return ClassifierOutput(logits=self.classify(f_n), features=f_n)
        s = self.settings
        original = self._non_local("original", f_n, k)
        logits = self._classify_roles(original, k)
        foreground = self.foreground_map(feats, k)
        weights = P.enhancement_weights(foreground, s.sigma, gain=s.foreground_gain,
                                        window=s.gaussian_window)  # eq. 9
        enhanced = self._non_local("enhanced", weights * f_n, k)  # eq. 10
        return ClassifierOutput(
            logits=logits, features=original,
            logits_enhanced=self._classify_roles(enhanced, k), features_enhanced=enhanced, foreground=foreground,
        )

    def forward(self, x: Tensor, group_size: int | None = None) -> ClassifierOutput:
        """x (B, 3, H, W), B a multiple of ``group_size`` (default: the settings' K)."""
        if self.settings is None:
            return self._forward_once(x, 1)
        k = group_size or self.settings.group_size
        out = self._forward_once(x, k)
        scales = self.settings.ls_target_scales
        multiscale = self.training and scales != (1.0,)
        if self._roles() == 1 and not multiscale:
            return out
        cams = F.relu(self._class_maps(out.features, k))
        maps = [self._class_maps(out.features_enhanced, k)]
        if multiscale:
            h, w = x.shape[-2:]
            with torch.no_grad():  # eq. 13's target at the other scales carries no gradient
                for scale in (sc for sc in scales if sc != 1.0):
                    xs = F.interpolate(x, size=(int(h * scale), int(w * scale)), mode="bilinear", align_corners=False)
                    maps.append(self._class_maps(self._forward_once(xs, k).features_enhanced, k))
        return out._replace(cams=cams, cams_enhanced=multiscale_mean_cams(maps, tuple(cams.shape[-2:])))

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, new layers) for the 1x / 10x learning rates; frozen ones left out."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        new = [p for name, m in self.named_children() if name != "backbone" for p in m.parameters() if p.requires_grad]
        return backbone, new
