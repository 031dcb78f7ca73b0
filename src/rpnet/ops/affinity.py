"""Inter-pixel pairs within a radius, their labels and their path affinities (IRN, Ahn et al. 2019).

IRN relates every pixel of a stride-4 feature map to the pixels less than ``radius`` away.
Each unordered pair is counted once: the offset ``(dy, dx)`` from the "from" pixel to the
"to" pixel lies in the lower half-plane (``dy > 0``, or ``dy == 0`` and ``dx > 0``).

Border convention for training (:func:`affinity_labels`, :func:`path_affinity`,
:func:`pair_difference`): with ``m = radius - 1`` (the largest ``|dy|`` or ``|dx|`` of an
offset), the "from" pixels are the cropped grid ``rows 0 .. h-m-1, cols m .. w-m-1``, of size
``(h - m, w - 2m)``; then every "to" pixel ``from + (dy, dx)`` lies inside the map, and
position ``[k, y, x]`` of a pair tensor is the pair ``(y, x + m) -> (y + dy_k, x + m + dx_k)``.
At inference (:func:`boundary_to_affinity`) every pixel is a "from" pixel: the map is padded
with boundary (edge = 1) on the left, right and bottom, so a pair whose "to" pixel falls
outside the image gets affinity 0.

Pure tensor functions; the device follows the inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..io import IGNORE_INDEX

Offset = tuple[int, int]  # (dy, dx), "to" minus "from", in feature-map pixels


def search_offsets(radius: int) -> tuple[Offset, ...]:
    """The half-plane offsets with 0 < dy^2 + dx^2 < radius^2, row-major ((0, 1), (0, 2), ..., (1, -m), ...).

    Only one of (dy, dx) and (-dy, -dx) is listed, so each unordered pair appears once.
    radius 2 gives (0, 1), (1, -1), (1, 0), (1, 1); IRN trains with 10 and walks with 5.
    """
    if radius < 2:
        raise ValueError(f"radius must be at least 2 (radius 1 has no neighbours), got {radius}")
    m = radius - 1
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [(dy, dx) for dy in range(1, radius) for dx in range(-m, m + 1) if dy * dy + dx * dx < radius * radius]
    return tuple(offsets)


def line_path(offset: Offset) -> tuple[Offset, ...]:
    """The lattice points a straight line from (0, 0) to ``offset`` passes: both ends included.

    A point of the bounding box of the two ends is on the path when its distance to the line
    through them is below one pixel (IRN's rule, which keeps both corner pixels of a diagonal
    step, so a one-pixel-wide boundary cannot be slipped through diagonally).
    """
    dy, dx = offset
    length_sq = dy * dy + dx * dx
    points = []
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            # squared distance of (y, x) to the line through (0, 0) and (dy, dx)
            if (dy * x - dx * y) ** 2 < length_sq:
                points.append((y, x))
    return tuple(points)


@dataclass(frozen=True)
class PathIndex:
    """The offsets within ``radius`` and, for each, the points of its straight path."""

    radius: int
    offsets: tuple[Offset, ...]
    paths: tuple[tuple[Offset, ...], ...]

    @property
    def margin(self) -> int:
        """m = radius - 1: the largest |dy| or |dx|, the border cropped off the "from" grid."""
        return self.radius - 1

    def from_size(self, height: int, width: int) -> tuple[int, int]:
        """(h - m, w - 2m): the size of the "from" grid of an (h, w) map."""
        m = self.margin
        if height <= m or width <= 2 * m:
            raise ValueError(f"a {height}x{width} map is too small for radius {self.radius}: "
                             f"need height > {m} and width > {2 * m}")
        return height - m, width - 2 * m

    def offset_tensor(self, device: torch.device | str | None = None) -> Tensor:
        """(2, O) float: row 0 the dy, row 1 the dx of every offset."""
        return torch.tensor(self.offsets, dtype=torch.float32, device=device).t()


@lru_cache(maxsize=None)
def path_index(radius: int) -> PathIndex:
    """The :class:`PathIndex` of a radius (cached: it depends on the radius only)."""
    offsets = search_offsets(radius)
    return PathIndex(radius, offsets, tuple(line_path(o) for o in offsets))


def _shifted(x: Tensor, index: PathIndex, point: Offset) -> Tensor:
    """x (..., h, w) -> (..., h', w'): the value at ``from + point`` for every "from" pixel."""
    hf, wf = index.from_size(*x.shape[-2:])
    py, px = point
    m = index.margin
    return x[..., py:py + hf, m + px:m + px + wf]


def from_values(x: Tensor, index: PathIndex) -> Tensor:
    """x (..., h, w) -> (..., h', w'): x at the "from" pixels (the cropped grid)."""
    return _shifted(x, index, (0, 0))


def to_values(x: Tensor, index: PathIndex) -> Tensor:
    """x (..., h, w) -> (..., O, h', w'): x at the "to" pixel of every offset."""
    return torch.stack([_shifted(x, index, o) for o in index.offsets], dim=-3)


def pair_difference(x: Tensor, index: PathIndex) -> Tensor:
    """x(from) - x(to) for every pair: x (..., h, w) -> (..., O, h', w')."""
    return from_values(x, index).unsqueeze(-3) - to_values(x, index)


class AffinityLabels(NamedTuple):
    """Boolean pair masks, each (..., O, h', w'); no pair with an ignored pixel is in any of them."""

    bg_pos: Tensor  # both pixels background (label 0)
    fg_pos: Tensor  # both pixels the same foreground class
    neg: Tensor  # two different labels


def affinity_labels(label: Tensor, index: PathIndex, ignore_index: int = IGNORE_INDEX) -> AffinityLabels:
    """IRN's pair labels from a label map at the feature stride.

    label (..., h, w) integer, 0 background, ``ignore_index`` unknown, anything else a class
    -> :class:`AffinityLabels` over the pairs (..., O, h', w') (see the module's border convention).
    """
    src = from_values(label, index).unsqueeze(-3)
    dst = to_values(label, index)
    valid = (src != ignore_index) & (dst != ignore_index)
    same = (src == dst) & valid
    return AffinityLabels(bg_pos=same & (src == 0), fg_pos=same & (src != 0), neg=valid & (src != dst))


def path_affinity(edge: Tensor, index: PathIndex) -> Tensor:
    """IRN's affinity of every pair: 1 - the largest boundary score on its straight path.

    edge (..., h, w) boundary probabilities in [0, 1] -> (..., O, h', w') over the cropped
    "from" grid. The path includes both pixels, so a pixel on a boundary has low affinity to
    everything. The max passes its gradient to one point of the path, as IRN's max-pool does.
    """
    # torch.max keeps only the argmax for backward, not the stacked path values.
    return torch.stack([
        1 - torch.stack([_shifted(edge, index, p) for p in path]).max(dim=0).values
        for path in index.paths
    ], dim=-3)


def boundary_to_affinity(edge: Tensor, radius: int) -> Tensor:
    """Path affinities with every pixel as a "from" pixel, for the random walk (inference).

    edge (..., h, w) in [0, 1] -> (..., O, h, w); entry [k, y, x] is the affinity of
    (y, x) -> (y + dy_k, x + dx_k) for the offsets of :func:`search_offsets`, and 0 where that
    "to" pixel is outside the map (the map is padded with boundary, IRN's propagate_to_edge).
    """
    index = path_index(radius)
    m = index.margin
    lead = edge.shape[:-2]
    flat = edge.reshape(-1, 1, *edge.shape[-2:])
    padded = F.pad(flat, (m, m, 0, m), value=1.0)
    return path_affinity(padded[:, 0], index).reshape(*lead, len(index.offsets), *edge.shape[-2:])


def downsample_labels(label: Tensor, stride: int) -> Tensor:
    """A label map at 1/stride by nearest sampling: label (..., H, W) -> (..., ceil(H/s), ceil(W/s)).

    Output pixel (i, j) takes the input pixel nearest the centre of its cell,
    (s*i + s//2, s*j + s//2) clamped into the map; for H a multiple of s this is PIL's nearest
    resize by 1/s, which IRN uses to bring its confident labels to the feature stride.
    """
    height, width = label.shape[-2:]
    rows = torch.arange(math.ceil(height / stride), device=label.device) * stride + stride // 2
    cols = torch.arange(math.ceil(width / stride), device=label.device) * stride + stride // 2
    return label[..., rows.clamp(max=height - 1), :][..., cols.clamp(max=width - 1)]
