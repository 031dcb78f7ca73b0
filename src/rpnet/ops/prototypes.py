"""Region prototypes and cross-image region comparison (paper Sec. III-D, eq. 3-10).

Pure tensor functions: no parameters, no state, no I/O; the device follows the inputs.
Shapes use B images, G groups of K images (B = G * K, a group is K consecutive
images), D embedding channels, P prototypes, H x W block4 positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-5  # keeps divisions by a spatial max or a mask area finite


def normalized_activation(feat: Tensor, per_channel: bool = True, eps: float = EPS) -> Tensor:
    """Eq. 3, inner part: A = relu(f) / (max relu(f) + eps), per image.

    ``per_channel`` (docs/method.md's default reading) divides each channel by its own spatial max;
    otherwise the whole map is divided by its single largest activation (eq. 3's ``max f_n(x, y)``
    read as one maximum over positions and channels). With hundreds of channels the per-channel
    reading puts some channel near its own peak at almost every position, so eq. 4-6's mask
    covers nearly everything; the global reading keeps eq. 6's threshold a fraction of the image's
    peak activation. feat (B, C, H, W) -> (B, C, H, W) in [0, 1).
    """
    act = F.relu(feat)
    peak = act.amax(dim=(2, 3) if per_channel else (1, 2, 3), keepdim=True)
    return act / (peak + eps)


def confidence_map(norm_act: Tensor) -> Tensor:
    """Eq. 4: O'(x, y) = max over channels. Taken on A (docs/method.md), so it is a fraction of the peak.

    norm_act (B, C, H, W) -> (B, 1, H, W).
    """
    return norm_act.amax(dim=1, keepdim=True)


def prototype_mask(confidence: Tensor, alpha: float, keep: float | None, generator: torch.Generator | None = None) -> Tensor:
    """Eq. 6: M = [O' > alpha] * Z with Z ~ Bernoulli(keep) drawn per position.

    ``keep=None`` (inference) drops nothing. confidence (B, 1, H, W) -> float mask of 0/1, same shape.
    """
    mask = (confidence > alpha).to(confidence.dtype)
    if keep is not None and keep < 1.0:
        z = torch.rand(mask.shape, generator=generator, device="cpu" if generator is not None else mask.device)
        mask = mask * (z.to(mask.device) < keep).to(mask.dtype)
    return mask


def feature_confident_mask(feat: Tensor, alpha: float, eps: float = EPS) -> Tensor:
    """The released code's reading of eq. 4 and 6's [O' > alpha]: any channel at >= alpha of its own peak.

    Each channel of the features themselves (no ReLU, no embedding) is divided by its spatial max
    (+ eps); a position is confident when some channel reaches ``alpha`` there. A channel whose values
    are all negative has a negative max, so its ratios can exceed ``alpha`` where the features are
    most negative: the released code has no ReLU here, and neither has this function.
    feat (B, C, H, W) -> float mask of 0/1, (B, 1, H, W).
    """
    ratio = feat / (feat.amax(dim=(2, 3), keepdim=True) + eps)
    return (ratio >= alpha).any(dim=1, keepdim=True).to(feat.dtype)


def region_prototypes(emb: Tensor, mask: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Eq. 5: p = sum_{x,y} O(x,y) M(x,y) / sum_{x,y} M(x,y), the masked mean embedding.

    emb (B, D, H, W), mask (B, 1, H, W) in {0, 1} -> prototypes (B, D) and ``valid`` (B,) bool.
    An image whose mask is empty has no prototype: its row is zero and ``valid`` is False.
    """
    area = mask.sum(dim=(2, 3))  # (B, 1)
    proto = (emb * mask).sum(dim=(2, 3)) / (area + eps)
    return proto, area.squeeze(1) > 0


def group_prototypes(protos: Tensor, valid: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Gather every prototype of every image of a group (eq. 7's n = 1..KN).

    protos (L, B, D) for L levels, valid (L, B) -> (G, K*L, D) and (G, K*L): group g holds the
    prototypes of its K images at all L levels, so each image is compared with its own and its
    partners' prototypes.
    """
    levels, batch, dim = protos.shape
    if batch % group_size:
        raise ValueError(f"batch of {batch} images is not a whole number of groups of {group_size}")
    groups = batch // group_size
    p = protos.reshape(levels, groups, group_size, dim).permute(1, 2, 0, 3).reshape(groups, group_size * levels, dim)
    v = valid.reshape(levels, groups, group_size).permute(1, 2, 0).reshape(groups, group_size * levels)
    return p, v


def region_similarity(emb: Tensor, protos: Tensor, valid: Tensor, group_size: int, eps: float = 1e-8,
                      clip: bool = True) -> Tensor:
    """Eq. 7-8: F(x, y) = max over the group's valid prototypes of cos(p, O(x, y)), clipped at 0.

    emb (B, D, H, W) the embedding compared against; protos (G, P, D) and valid (G, P) from
    :func:`group_prototypes`. -> (B, 1, H, W). A group with no valid prototype at all gives F = 0
    for its images; :func:`enhance_features` treats that as "no evidence" (see there).
    ``clip=False`` keeps negative maxima (the released code's F is not clipped).
    """
    batch, dim, h, w = emb.shape
    groups = batch // group_size
    e = F.normalize(emb, dim=1, eps=eps).reshape(groups, group_size, dim, h * w)
    p = F.normalize(protos, dim=2, eps=eps)
    cos = torch.einsum("gpd,gkdn->gkpn", p, e)  # (G, K, P, HW)
    cos = cos.masked_fill(~valid[:, None, :, None], float("-inf"))
    best = cos.amax(dim=2)  # (G, K, HW); -inf where no prototype is valid
    best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    if clip:
        best = best.clamp_min(0)
    return best.reshape(batch, 1, h, w)


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """Eq. 9 separated: g(t) proportional to exp(-t^2 / 2 sigma^2), radius ceil(3 sigma), summing to 1.

    The 2-D kernel G(x, y) = g(x) g(y) is eq. 9's 1/(2 pi sigma^2) exp(-(x^2+y^2)/(2 sigma^2))
    renormalised to sum to 1 on its truncated support.
    """
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_smooth(x: Tensor, sigma: float) -> Tensor:
    """Eq. 9: separable Gaussian filter with edge replication (maps are often smaller than the kernel).

    x (B, 1, H, W) -> (B, 1, H, W).
    """
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    r = (k.numel() - 1) // 2
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def gaussian_smooth_window(x: Tensor, sigma: float, size: int = 5) -> Tensor:
    """Eq. 9 on a fixed ``size`` x ``size`` window with zero padding (the released code's filter).

    The kernel is g(x) g(y) on the window's offsets -(size // 2)..size // 2, renormalised to sum to 1
    on the window; the map is padded with zeros, so values near the border are pulled towards 0.
    x (B, 1, H, W) -> (B, 1, H, W).
    """
    r = size // 2
    t = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return F.conv2d(x, (k / k.sum()).view(1, 1, size, size), padding=r)


GAUSSIAN_WINDOWS = ("3sigma_replicate", "5x5_zeros")


def enhancement_weights(similarity: Tensor, sigma: float | None, eps: float = EPS, gain: float = 1.0,
                        window: str = "3sigma_replicate") -> Tensor:
    """Eq. 9-10's weight map: F divided by its spatial max, then Gaussian-smoothed (``sigma=None``: off).

    similarity (B, 1, H, W) -> (B, 1, H, W) in [0, 1]. An all-zero F (no prototype matched anything)
    stays all-zero, so that image's enhanced features vanish: nothing in it resembles an object region
    of its group.

    ``gain`` multiplies F / max F before the filter (the released code's 1.3, so that the weights
    reach 1.3 and the enhancement can amplify features as well as suppress them). ``window``:
    "3sigma_replicate" (:func:`gaussian_smooth`, radius ceil(3 sigma), edge replication) or
    "5x5_zeros" (:func:`gaussian_smooth_window`, the released code's 5 x 5 window, zero padding).
    """
    if window not in GAUSSIAN_WINDOWS:
        raise ValueError(f"window must be one of {GAUSSIAN_WINDOWS}, got {window!r}")
    w = similarity / (similarity.amax(dim=(2, 3), keepdim=True) + eps)
    if gain != 1.0:
        w = w * gain
    if sigma:
        w = gaussian_smooth(w, sigma) if window == "3sigma_replicate" else gaussian_smooth_window(w, sigma)
    return w
