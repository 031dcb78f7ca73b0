"""Dense CRF smoothing (Kraehenbuehl and Koltun's fully connected CRF, via pydensecrf).

Two uses: IRN's confident labels for boundary refinement (docs/method.md stage 4), where a hard
label map is smoothed, and the segmentation model's post-processing (stage 9), where class
probabilities are refined. Arrays in, arrays out (numpy, on the CPU: pydensecrf is CPU code).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax

from ..io import IGNORE_INDEX


@dataclass(frozen=True)
class DenseCRFParams:
    """The pairwise terms and the number of mean-field iterations of a dense CRF."""

    gaussian_sxy: float  # position std (pixels) of the smoothness kernel
    gaussian_compat: float  # weight of the smoothness kernel
    bilateral_sxy: float  # position std (pixels) of the appearance kernel
    bilateral_srgb: float  # colour std of the appearance kernel
    bilateral_compat: float  # weight of the appearance kernel
    steps: int = 10  # mean-field iterations


# IRN's crf_inference_label, which makes the confident labels.
IRN_LABEL_CRF = DenseCRFParams(gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=50, bilateral_srgb=5,
                               bilateral_compat=10, steps=10)
# DeepLab's post-processing defaults (pos_w 3, pos_xy_std 1, bi_w 4, bi_xy_std 67, bi_rgb_std 3).
DEEPLAB_CRF = DenseCRFParams(gaussian_sxy=1, gaussian_compat=3, bilateral_sxy=67, bilateral_srgb=3,
                             bilateral_compat=4, steps=10)
LABEL_CONFIDENCE = 0.7  # IRN's gt_prob: the unary's belief in the given label
PROB_CLIP = 1e-5  # smallest probability before the log of the unary

FG_CONF_THRESHOLD = 0.30  # docs/method.md stage 4: background score for the confident-foreground map
BG_CONF_THRESHOLD = 0.05  # docs/method.md stage 4: background score for the confident-background map


def _check_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 of shape ({height}, {width}, 3), "
                         f"got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _mean_field(image: np.ndarray, unary: np.ndarray, n_labels: int, params: DenseCRFParams) -> np.ndarray:
    """Runs the CRF on a (n_labels, H*W) float32 unary -> (n_labels, H, W) marginals."""
    height, width = image.shape[:2]
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=image,
                             compat=params.bilateral_compat)
    return np.asarray(crf.inference(params.steps), dtype=np.float32).reshape(n_labels, height, width)


def crf_label(image: np.ndarray, labels: np.ndarray, n_labels: int, params: DenseCRFParams = IRN_LABEL_CRF,
              gt_prob: float = LABEL_CONFIDENCE) -> np.ndarray:
    """IRN's crf_inference_label: a hard label map smoothed by a dense CRF.

    image (H, W, 3) uint8 RGB, labels (H, W) integers in 0..n_labels-1 -> (H, W) int64 labels
    in 0..n_labels-1, the argmax of the CRF's marginals. Every pixel's unary believes its label
    with probability ``gt_prob`` and spreads the rest evenly over the other labels.
    """
    labels = np.asarray(labels)
    image = _check_image(image, *labels.shape)
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"labels must lie in 0..{n_labels - 1}, got {labels.min()}..{labels.max()}")
    if n_labels < 2:
        return labels.astype(np.int64)  # a single label: nothing to decide
    unary = unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=gt_prob, zero_unsure=False)
    return _mean_field(image, unary, n_labels, params).argmax(axis=0)


def crf_refine_probs(image: np.ndarray, probs: np.ndarray, params: DenseCRFParams = DEEPLAB_CRF) -> np.ndarray:
    """Class probabilities refined by a dense CRF (segmentation post-processing).

    image (H, W, 3) uint8 RGB, probs (C, H, W) per-pixel class probabilities (summing to 1
    over C) -> (C, H, W) float32 CRF marginals; take the argmax over C for a label map.
    """
    probs = np.asarray(probs, dtype=np.float32)
    image = _check_image(image, *probs.shape[1:])
    unary = unary_from_softmax(probs, clip=PROB_CLIP)
    return _mean_field(image, unary, probs.shape[0], params)


def confident_labels(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, fg_threshold: float = FG_CONF_THRESHOLD,
                     bg_threshold: float = BG_CONF_THRESHOLD, params: DenseCRFParams = IRN_LABEL_CRF) -> np.ndarray:
    """IRN's cam_to_ir_label: confident foreground, confident background and "unsure" (docs/method.md stage 4).

    Args:
        image: (H, W, 3) uint8 RGB.
        cams: (K, H, W) full-size CAMs of the image's K tagged classes, each max-normalised.
        keys: (K,) the 0-based class index of each CAM.
        fg_threshold: background score of the foreground map (high: only strong CAM is foreground).
        bg_threshold: background score of the background map (low: only weak CAM is background).

    Returns:
        (H, W) uint8: keys[k] + 1 where the CRF-smoothed foreground map says class keys[k];
        0 where both CRF-smoothed maps say background; IGNORE_INDEX (255) where the foreground
        map says background but the background map says foreground.
    """
    cams = np.asarray(cams, dtype=np.float32)
    labels = np.concatenate([[0], np.asarray(keys, dtype=np.int64).reshape(-1) + 1])
    if cams.shape[0] != labels.size - 1:
        raise ValueError(f"got {cams.shape[0]} CAMs but {labels.size - 1} keys")

    def smoothed(threshold: float) -> np.ndarray:
        scores = np.concatenate([np.full((1,) + cams.shape[1:], threshold, dtype=np.float32), cams])
        return labels[crf_label(image, scores.argmax(axis=0), labels.size, params)]

    fg = smoothed(fg_threshold)
    bg = smoothed(bg_threshold)
    out = fg.copy()
    out[(fg == 0) & (bg != 0)] = IGNORE_INDEX
    return out.astype(np.uint8)
