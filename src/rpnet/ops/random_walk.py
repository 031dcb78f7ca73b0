"""The random walk that spreads CAMs within the regions a boundary map encloses (IRN, docs/method.md stage 6).

Convention: a map of N = h*w pixels is flattened row-major; A (N, N) is the symmetric affinity
matrix with A_ij = (1 - max boundary on the path i-j) ** beta for pixels less than ``radius``
apart and A_ii = 1; T = A D^-1 (D = diag of A's column sums) is column-stochastic, and one
step of the walk is IRN's ``v <- v T`` for a row vector v per class:

    v'_j = sum_i v_i A_ij / sum_k A_kj,

the affinity-weighted average of v over j's neighbours. It keeps constant maps constant and
every value between the input's min and max; it does not conserve the sum of v (that would be
the other direction, T v). The walk is computed step by step, never with a dense (N, N)
matrix: T is either a torch sparse tensor or, faster, a :class:`WalkStencil` holding each
pixel's column of T over its fixed neighbourhood.

Pure tensor functions; the device follows the inputs.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .affinity import Offset, boundary_to_affinity, path_index

# The walk's radius, beta, steps and background score have their defaults in one place, the config
# (rpnet.config.PseudoConfig: IRN's 5, 10, 2^8 and 0.25); every function here takes them explicitly.
WALK_STRIDE = 4  # the CAMs the walk refines and IRN's boundary map are at 1/4 of the image
EPS = 1e-5  # keeps the global max normalisation finite when the walk gives all zeros


def strided_size(size: tuple[int, int], stride: int = WALK_STRIDE) -> tuple[int, int]:
    """The size of a map at ``stride`` of an image of ``size`` (H, W): (ceil(H / stride), ceil(W / stride))."""
    return -(-size[0] // stride), -(-size[1] // stride)


class WalkStencil(NamedTuple):
    """A matrix M (N, N) with a fixed neighbourhood, stored per pixel: ``weights[k, y, x]`` is
    M[(y, x) + shifts[k], (y, x)], the entry linking pixel (y, x) to its k-th neighbour
    (zero where that neighbour is outside the map)."""

    shifts: tuple[Offset, ...]  # (sy, sx): the offsets, their negatives, then (0, 0)
    weights: Tensor  # (S, h, w), S = 2 * O + 1


def affinity_stencil(edge: Tensor, radius: int, beta: float) -> WalkStencil:
    """The symmetric affinity matrix A of a boundary map in stencil form.

    edge (h, w) boundary probabilities in [0, 1] -> A with A_ij = A_ji = (1 - max of edge on the
    straight path i-j) ** beta for 0 < |i - j| < radius, A_ii = 1, zero further apart.
    """
    index = path_index(radius)
    m = index.margin
    height, width = edge.shape
    forward = boundary_to_affinity(edge, radius).pow(beta)  # [k, p] = A[p + o_k, p]; 0 off the map
    # A[p - o_k, p] = A[p, p - o_k] = forward[k, p - o_k]: the forward map moved by +o_k.
    padded = F.pad(forward, (m, m, m, m))
    backward = torch.stack([
        padded[k, m - dy:m - dy + height, m - dx:m - dx + width] for k, (dy, dx) in enumerate(index.offsets)
    ])
    shifts = index.offsets + tuple((-dy, -dx) for dy, dx in index.offsets) + ((0, 0),)
    weights = torch.cat([forward, backward, torch.ones_like(edge)[None]])
    return WalkStencil(shifts, weights)


def transition_stencil(affinity: WalkStencil) -> WalkStencil:
    """T = A D^-1 in stencil form: each pixel's weights (a column of A) divided by their sum.

    The self-loop A_ii = 1 keeps every sum positive.
    """
    return WalkStencil(affinity.shifts, affinity.weights / affinity.weights.sum(dim=0, keepdim=True))


def stencil_to_sparse(stencil: WalkStencil) -> Tensor:
    """The (N, N) sparse COO matrix of a stencil, N = h*w flattened row-major; off-map entries dropped."""
    _, height, width = stencil.weights.shape
    device = stencil.weights.device
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    rows, cols, vals = [], [], []
    for k, (sy, sx) in enumerate(stencil.shifts):
        ny, nx = ys + sy, xs + sx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        rows.append((ny * width + nx)[inside])
        cols.append((ys * width + xs)[inside])
        vals.append(stencil.weights[k][inside])
    indices = torch.stack([torch.cat(rows), torch.cat(cols)])
    n = height * width
    return torch.sparse_coo_tensor(indices, torch.cat(vals), (n, n), check_invariants=False).coalesce()


def sparse_affinity(edge: Tensor, radius: int, beta: float) -> Tensor:
    """The affinity matrix of :func:`affinity_stencil` as a sparse COO tensor (N, N), N = h*w."""
    return stencil_to_sparse(affinity_stencil(edge, radius, beta))


def transition_matrix(affinity: Tensor) -> Tensor:
    """T = A D^-1: the sparse affinity (N, N) with each column divided by its sum -> sparse COO (N, N).

    Every column of T sums to 1 (column-stochastic). A needs a positive entry in every column,
    which the self-loops A_ii = 1 of :func:`sparse_affinity` guarantee.
    """
    affinity = affinity.coalesce()
    col_sums = torch.sparse.sum(affinity, dim=0).to_dense()
    cols = affinity.indices()[1]
    return torch.sparse_coo_tensor(affinity.indices(), affinity.values() / col_sums[cols],
                                   affinity.shape, check_invariants=False).coalesce()


def random_walk(cams: Tensor, transition: Tensor, steps: int) -> Tensor:
    """``steps`` walk steps v <- v T with a sparse T: cams (C, h, w), T sparse (N, N) -> (C, h, w).

    Equals cams (as rows) times T ** steps, computed as ``steps`` sparse products (O(steps * nnz(T) * C)).
    """
    num_classes, height, width = cams.shape
    # (v T)^T = T^T v^T: keep the classes as columns and multiply by T^T.
    step = transition.t().coalesce()
    v = cams.reshape(num_classes, height * width).t().contiguous()
    for _ in range(steps):
        v = torch.sparse.mm(step, v)
    return v.t().reshape(num_classes, height, width)


def random_walk_stencil(cams: Tensor, transition: WalkStencil, steps: int) -> Tensor:
    """The walk of :func:`random_walk` with T in stencil form (the fast path: no index arithmetic).

    cams (C, h, w) -> (C, h, w); each step is v'(p) = sum_k weights[k, p] * v(p + shifts[k]).
    """
    height, width = cams.shape[-2:]
    m = max(max(abs(sy), abs(sx)) for sy, sx in transition.shifts)
    v = cams
    for _ in range(steps):
        padded = F.pad(v, (m, m, m, m))  # off-map neighbours have weight 0; any value would do
        v = torch.zeros_like(cams)
        for weight, (sy, sx) in zip(transition.weights, transition.shifts):
            v.addcmul_(weight, padded[:, m + sy:m + sy + height, m + sx:m + sx + width])
    return v


def random_walk_dense_reference(cams: Tensor, transition: Tensor, steps: int) -> Tensor:
    """The same walk with a dense T ** steps, for tests and benchmarks only.

    Needs O(N^2) memory and O(N^3 log steps) time (N = h*w), so it is usable on tiny maps only.
    cams (C, h, w), transition sparse or dense (N, N) -> (C, h, w).
    """
    num_classes, height, width = cams.shape
    dense = transition.to_dense() if transition.is_sparse else transition
    walked = cams.reshape(num_classes, -1) @ torch.linalg.matrix_power(dense, steps)
    return walked.reshape(num_classes, height, width)


def walk_cams(cams: Tensor, edge: Tensor, *, radius: int, beta: float,
              steps: int) -> Tensor:
    """IRN's walk (make_sem_seg_labels): CAMs spread within the regions the boundaries enclose.

    cams (K, h, w) the stride-4 CAMs of the image's K tagged classes, each max-normalised
    (stage 2's output); edge (h, w) the IRN boundary probabilities in [0, 1] -> (K, h, w).

    1. T from the boundary map (:func:`affinity_stencil`, :func:`transition_stencil`).
    2. The CAMs are multiplied by (1 - edge), so boundary pixels start with no score.
    3. ``steps`` walk steps spread the scores within regions (:func:`random_walk_stencil`).
    """
    if cams.shape[-2:] != edge.shape:
        raise ValueError(f"CAMs of size {tuple(cams.shape[-2:])} but a boundary map of size {tuple(edge.shape)}")
    if cams.shape[0] == 0:
        return cams.clone()
    transition = transition_stencil(affinity_stencil(edge, radius, beta))
    return random_walk_stencil(cams * (1 - edge), transition, steps)


def walk_scores(walked: Tensor, image_size: tuple[int, int], stride: int = WALK_STRIDE) -> Tensor:
    """The walked CAMs as class scores of the image (IRN, after the walk).

    walked (K, h, w) from :func:`walk_cams`, image_size (H, W) with h, w = ceil(H / stride),
    ceil(W / stride) -> (K, H, W) in [0, 1]:

    4. Bilinear upsampling by ``stride`` (align_corners=False), cropped to (H, W).
    5. Division by the single max over all classes and pixels (IRN's global max: the classes
       keep their relative strengths after the walk).
    """
    height, width = image_size
    if walked.shape[-2] * stride < height or walked.shape[-1] * stride < width:
        raise ValueError(f"CAMs of size {tuple(walked.shape[-2:])} at stride {stride} "
                         f"do not cover an image of size {image_size}")
    if walked.shape[0] == 0:
        return walked.new_zeros(0, height, width)
    up = F.interpolate(walked[:, None], scale_factor=stride, mode="bilinear", align_corners=False)
    up = up[:, 0, :height, :width]
    return up / up.max().clamp_min(EPS)


def scores_to_labels(scores: Tensor, keys: Sequence[int] | Tensor, bg_threshold: float) -> Tensor:
    """IRN's argmax against a constant background: scores (K, H, W), keys (K,) 0-based classes
    -> (H, W) uint8 with 0 where ``bg_threshold`` beats every class, else keys[k] + 1."""
    keys = torch.as_tensor(keys, dtype=torch.long, device=scores.device).reshape(-1)
    if scores.shape[0] != keys.numel():
        raise ValueError(f"got {scores.shape[0]} score maps but {keys.numel()} keys")
    full = torch.cat([scores.new_full((1, *scores.shape[1:]), bg_threshold), scores])
    labels = torch.cat([keys.new_zeros(1), keys + 1])
    return labels[full.argmax(dim=0)].to(torch.uint8)


def pseudo_label_from_walk(
    cams: Tensor,
    keys: Sequence[int] | Tensor,
    edge: Tensor,
    image_size: tuple[int, int],
    *,
    radius: int,
    beta: float,
    steps: int,
    bg_threshold: float,
    stride: int = WALK_STRIDE,
) -> Tensor:
    """IRN's semantic pseudo label: :func:`walk_cams`, :func:`walk_scores`, then :func:`scores_to_labels`.

    cams (K, h, w) stride-``stride`` CAMs, keys (K,) their 0-based classes, edge (h, w) boundary
    probabilities, image_size (H, W) -> (H, W) uint8 label map: 0 background (where the constant
    ``bg_threshold`` beats every walked score), keys[k] + 1 for class keys[k].
    """
    if cams.shape[0] != torch.as_tensor(keys).numel():
        raise ValueError(f"got {cams.shape[0]} CAMs but {torch.as_tensor(keys).numel()} keys")
    walked = walk_cams(cams, edge, radius=radius, beta=beta, steps=steps)
    return scores_to_labels(walk_scores(walked, image_size, stride), keys, bg_threshold)
