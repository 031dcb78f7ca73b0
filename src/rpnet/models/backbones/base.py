"""The seam between a backbone and the models on it (classifier, IRN, DeepLab), and the registry.

Every backbone, whatever its family, is a :class:`Backbone`: ``forward_features(x)`` returns
five levels as a :class:`BackboneFeatures`, in order of stride:

========  ==========================  ==================================
level     shape for a (B, 3, H, W)    stride
========  ==========================  ==================================
stem      (B, C_stem, H/4, W/4)       4
block1    (B, C_1, H/4, W/4)          4
block2    (B, C_2, H/8, W/8)          8
block3    (B, C_3, H/s3, W/s3)        s3 = min(16, output_stride)
block4    (B, C_4, H/s, W/s)          s = output_stride (32, 16 or 8)
========  ==========================  ==================================

(sizes rounded up when H, W are not multiples of the stride, as a padded conv rounds them).
``channels`` maps each level to its C, ``output_stride`` is s, and ``stem_parameters()``
yields the parameters that ``freeze_stem`` freezes. Nothing else of a backbone is read by
the models, so a new family only has to provide these.

The registry :data:`BACKBONES` maps a name to a factory; a family registers its factories with
:func:`register_backbone`. The package's ``__init__`` imports every module of the package
other than this one, so a new family is one new module in ``rpnet/models/backbones/``.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterator, NamedTuple, Protocol

from torch import Tensor, nn

from rpnet.errors import ConfigError

LEVELS = ("stem", "block1", "block2", "block3", "block4")
STEM_STRIDE = 4  # the stride of the stem and of block1
BLOCK2_STRIDE = 8
OUTPUT_STRIDES = (8, 16, 32)  # the strides block4 may have
# What ``norm`` asks of a backbone: "bn" normalises with the batch's statistics while training,
# "frozen" with the running ones (IRN's FixedBatchNorm). A family without batch statistics
# (ConvNeXt's LayerNorm) accepts both and builds the same layers for each.
NORMS = ("bn", "frozen")
IMAGENET_CLASSES = 1000


class BackboneFeatures(NamedTuple):
    """The five levels of a backbone, each (B, C_level, H_level, W_level); see the module docstring.

    With an input of (B, 3, H, W): stem and block1 are at H/4, block2 at H/8, block3 at H/16
    (H/8 at output stride 8) and block4 at H/output_stride.
    """

    stem: Tensor
    block1: Tensor
    block2: Tensor
    block3: Tensor
    block4: Tensor


def level_strides(output_stride: int) -> dict[str, int]:
    """The stride of each level of a backbone of the given output stride, e.g. 16 -> block3 16, block4 16."""
    check_output_stride(output_stride)
    return {"stem": STEM_STRIDE, "block1": STEM_STRIDE, "block2": BLOCK2_STRIDE,
            "block3": min(2 * BLOCK2_STRIDE, output_stride), "block4": output_stride}


def check_output_stride(output_stride: int) -> None:
    """Raise a ConfigError unless ``output_stride`` is one of :data:`OUTPUT_STRIDES`."""
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"unknown output_stride {output_stride}; choose from {sorted(OUTPUT_STRIDES)}")


def check_norm(norm: str) -> None:
    """Raise a ConfigError unless ``norm`` is one of :data:`NORMS`."""
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; choose from {sorted(NORMS)}")


class Backbone(nn.Module):
    """A headless feature extractor with the five levels of the module docstring.

    A family subclasses this and provides, in ``__init__``:

    - ``self.channels``: {level: channel count} for all of :data:`LEVELS`;
    - ``self.output_stride``: 32, 16 or 8, block4's stride (the strides of the other levels
      follow from it, :func:`level_strides`);

    and the methods :meth:`levels` and :meth:`stem_parameters`. The class attribute
    ``head_prefixes`` names the state-dict prefixes of the family's ImageNet classifier,
    which weights files carry and a backbone does not use.

    ``forward_features`` is written once here: every family runs its five levels in a chain,
    each level reading the previous one's output.
    """

    head_prefixes: tuple[str, ...] = ()

    def levels(self) -> tuple[Callable[[Tensor], Tensor], ...]:
        """The five functions stem, block1, ..., block4, each applied to the previous one's output."""
        raise NotImplementedError

    def stem_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters ``freeze_stem`` freezes (those computing the stem level)."""
        raise NotImplementedError

    def forward_features(self, x: Tensor, detach: Collection[str] = ()) -> BackboneFeatures:
        """(B, 3, H, W) image batch -> the five levels (:class:`BackboneFeatures`).

        ``detach``: levels whose output is detached, both where it is returned and where the
        next level reads it, so that no gradient reaches that level or any before it through
        the later ones (the classifier detaches block2, as IRN's CAM network does).
        """
        unknown = sorted(set(detach) - set(LEVELS))
        if unknown:
            raise ValueError(f"cannot detach {unknown}: not levels of a backbone {LEVELS}")
        outputs = []
        for name, level in zip(LEVELS, self.levels()):
            x = level(x)
            if name in detach:
                x = x.detach()
            outputs.append(x)
        return BackboneFeatures(*outputs)

    def forward(self, x: Tensor) -> BackboneFeatures:
        """Same as :meth:`forward_features`; an ImageNet head, if built, is never applied."""
        return self.forward_features(x)


class BackboneFactory(Protocol):
    """What :func:`register_backbone` registers: keyword arguments only, defaults as below.

    ``num_classes`` builds the ImageNet head (so that classification checkpoints load key for
    key; None builds none); ``norm`` is one of :data:`NORMS`; ``freeze_stem`` sets
    ``requires_grad=False`` on :meth:`Backbone.stem_parameters`.
    """

    def __call__(self, *, num_classes: int | None = IMAGENET_CLASSES, output_stride: int = 32,
                 norm: str = "bn", freeze_stem: bool = False) -> Backbone: ...


BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: add a factory to :data:`BACKBONES` under ``name`` (a config's ``model.backbone``)."""
    def register(factory: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = factory
        return factory
    return register
