"""Augmentation for training and evaluation, one small callable per step.

A sample is a dict ``{"image": uint8 (H, W, 3) RGB, "tags": float32 (C,),
"mask": uint8 (H, W) (when present), "id": str, "index": int}``. A transform is a
callable ``transform(sample, rng) -> sample`` that returns a new dict (the input is
left untouched) and draws its randomness from ``rng`` alone, so a sample's
augmentation is fixed by the generator the dataset seeds from (seed, epoch, index).

The classifier's order follows IRN: resize the long side, flip, normalise, crop,
to tensor. Cropping comes after normalising so that padding with 0 pads with the
ImageNet mean, which the network sees as "no signal".
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from rpnet.io import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, on images scaled to [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
UINT8_MAX = 255.0
IMAGE_PAD_VALUE = 0.0  # after Normalize, 0 is the ImageNet mean colour

Sample = dict[str, Any]
Transform = Callable[[Sample, np.random.Generator], Sample]


def _resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (H, W, 3) image, uint8 or float32, keeping its dtype."""
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    # PIL has no 3-channel float mode: resize each channel as a 32-bit float plane.
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F")
                   .resize((width, height), Image.BILINEAR))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=-1).astype(image.dtype, copy=False)


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) uint8 label map, so no new labels appear."""
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))


def _rescale(sample: Sample, scale: float) -> Sample:
    """Resize image (bilinear) and mask (nearest) by ``scale``; each side stays at least 1 px."""
    height, width = sample["image"].shape[:2]
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    out = dict(sample)
    out["image"] = _resize_image(sample["image"], new_h, new_w)
    if "mask" in sample:
        out["mask"] = _resize_mask(sample["mask"], new_h, new_w)
    return out


class RandomResizeLong:
    """Rescale so that the long side is a random integer in [min_long, max_long] (IRN)."""

    def __init__(self, min_long: int, max_long: int) -> None:
        if not 1 <= min_long <= max_long:
            raise ValueError(f"need 1 <= min_long <= max_long, got ({min_long}, {max_long})")
        self.min_long, self.max_long = min_long, max_long

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        target_long = int(rng.integers(self.min_long, self.max_long, endpoint=True))
        return _rescale(sample, target_long / max(sample["image"].shape[:2]))


class RandomScale:
    """Rescale by a factor drawn uniformly from [min_scale, max_scale] (segmentation's jitter)."""

    def __init__(self, min_scale: float, max_scale: float) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got ({min_scale}, {max_scale})")
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return _rescale(sample, float(rng.uniform(self.min_scale, self.max_scale)))


class RandomHFlip:
    """Mirror image and mask left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return dict(sample)
        out = dict(sample)
        out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
        if "mask" in sample:
            out["mask"] = np.ascontiguousarray(sample["mask"][:, ::-1])
        return out


def _crop_window(length: int, size: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """One axis of a random crop: (source start, destination start, copied length).

    A side longer than the crop is cut at a random offset; a shorter one is placed
    at a random offset inside the padded crop, so both cases see random positions.
    """
    if length >= size:
        return int(rng.integers(0, length - size, endpoint=True)), 0, size
    return 0, int(rng.integers(0, size - length, endpoint=True)), length


class RandomCrop:
    """A random ``size`` x ``size`` crop; images smaller than the crop are padded.

    Padding: the image with 0 (meant to run after :class:`Normalize`, where 0 is the
    ImageNet mean; on a uint8 image it would be black), the mask with ``ignore_index``
    so that padded pixels carry no label.
    """

    def __init__(self, size: int, ignore_index: int = IGNORE_INDEX) -> None:
        if size < 1:
            raise ValueError(f"crop size must be positive, got {size}")
        self.size, self.ignore_index = size, ignore_index

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"]
        height, width = image.shape[:2]
        src_y, dst_y, len_y = _crop_window(height, self.size, rng)
        src_x, dst_x, len_x = _crop_window(width, self.size, rng)
        src = (slice(src_y, src_y + len_y), slice(src_x, src_x + len_x))
        dst = (slice(dst_y, dst_y + len_y), slice(dst_x, dst_x + len_x))

        out = dict(sample)
        out["image"] = np.full((self.size, self.size, image.shape[2]), IMAGE_PAD_VALUE, dtype=image.dtype)
        out["image"][dst] = image[src]
        if "mask" in sample:
            out["mask"] = np.full((self.size, self.size), self.ignore_index, dtype=sample["mask"].dtype)
            out["mask"][dst] = sample["mask"][src]
        return out


class Normalize:
    """uint8 image -> float32 ``(x / 255 - mean) / std`` per channel (ImageNet by default)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = sample["image"]
        # A float image here means it was normalised already; doing it twice is silent damage.
        if image.dtype != np.uint8:
            raise ValueError(f"Normalize expects a uint8 image, got {image.dtype}")
        out = dict(sample)
        out["image"] = (image.astype(np.float32) / UINT8_MAX - self.mean) / self.std
        return out


class ToTensor:
    """image (H, W, 3) -> float32 tensor (3, H, W); mask -> int64 (H, W); tags -> float32 (C,)."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        out["image"] = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1), dtype=np.float32))
        out["tags"] = torch.as_tensor(np.asarray(sample["tags"], dtype=np.float32))
        if "mask" in sample:
            out["mask"] = torch.from_numpy(np.asarray(sample["mask"], dtype=np.int64))
        return out


class Compose:
    """Apply transforms in order, all drawing from the one generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


def train_transform(crop_size: int, resize_long: tuple[int, int] = (320, 640)) -> Compose:
    """The classifier's and IRN's training augmentation (IRN's order).

    uint8 (H, W, 3) image -> float32 tensor (3, crop_size, crop_size).
    """
    return Compose([RandomResizeLong(*resize_long), RandomHFlip(), Normalize(), RandomCrop(crop_size), ToTensor()])


def eval_transform() -> Compose:
    """No geometry: normalise and convert, image (H, W, 3) -> float32 tensor (3, H, W)."""
    return Compose([Normalize(), ToTensor()])


def seg_train_transform(crop_size: int, scale_range: tuple[float, float] = (0.5, 1.5)) -> Compose:
    """The segmentation model's augmentation: scale jitter relative to the image, flip, crop.

    uint8 (H, W, 3) image -> float32 tensor (3, crop_size, crop_size); mask padded with 255.
    """
    return Compose([RandomScale(*scale_range), RandomHFlip(), Normalize(), RandomCrop(crop_size), ToTensor()])


def collate(samples: Sequence[Sample]) -> dict[str, Any]:
    """Batch samples: tensors stacked on a new first axis, ints into an int64 tensor,
    anything else (ids) kept as a list.

    image (3, H, W) -> (B, 3, H, W); mask (H, W) -> (B, H, W); tags (C,) -> (B, C);
    index -> (B,); id -> list of B strings. All samples must have the same keys.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    keys = list(samples[0])
    for sample in samples[1:]:
        if set(sample) != set(keys):
            raise ValueError(f"samples in a batch have different keys: {sorted(keys)} vs {sorted(sample)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        first = values[0]
        if isinstance(first, (torch.Tensor, np.ndarray)):
            tensors = [torch.as_tensor(v) for v in values]
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) > 1:
                raise ValueError(f"cannot stack {key!r} of different shapes {sorted(shapes)}; "
                                 "crop to one size or use batch size 1")
            batch[key] = torch.stack(tensors)
        elif isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            batch[key] = torch.as_tensor([int(v) for v in values], dtype=torch.int64)
        else:
            batch[key] = values
    return batch
