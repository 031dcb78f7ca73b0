"""The trained segmentation model as users take it home: its weights file, inference, a predictor.

The weights file
----------------
``train-seg`` writes ``WORK_DIR/train_seg/model.safetensors``: the model's state dict, plus
safetensors *metadata* (string -> string, read without loading any tensor) that says how to
rebuild the model, so that the one file is all ``rpnet predict`` / ``rpnet export`` need::

    rpnet_format   "rpnet.segmentation.v1"
    architecture   "deeplab_largefov" | "deeplabv3plus"
    backbone       e.g. "resnet50"
    output_stride  "8" | "16"
    class_names    JSON list, background first, e.g. '["background", "aeroplane", ...]'
    mean, std      JSON lists of 3 floats: the input normalisation, (x / 255 - mean) / std

Inference
---------
An image is normalised, run at each scale (and mirrored, when asked), and the softmax
probabilities are averaged over all passes at the image's size. An image whose side exceeds
``tile_size`` at some scale is cut into overlapping tiles (:func:`tiled_logits`), so memory does not
grow with the image; ``max_side`` downscales very large images first, since the probabilities
themselves are kept at full size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from torch import Tensor, nn

from .data.folder import IMAGE_SUFFIXES as DATASET_SUFFIXES
from .data.images import read_class_list, read_image
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, UINT8_MAX
from .errors import ConfigError, DataError
from .io import remove_temporaries, save_image, save_mask
from .models.deeplab import ALIGN_CORNERS, build_segmentation_model
from .models.weights import save_safetensors
from .runtime import resolve_device
from .viz import BAND_ROWS, label_overlay, legend_image

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "rpnet.segmentation.v1"
IMAGE_SUFFIXES = tuple(sorted(DATASET_SUFFIXES))  # what a dataset reads, predict reads (.gif included)
DEFAULT_TILE_SIZE = 512  # pixels; a ResNet-50 DeepLab at output stride 8 needs ~1 GB for a tile this size
DEFAULT_TILE_OVERLAP = 128  # pixels shared by neighbouring tiles; each keeps the inner half of the overlap
LEGEND = "legend.png"  # predict's key to the overlay colours, in OUT
DEFAULT_MAX_SIDE = 4096  # longer images are downscaled first: the (C, H, W) probabilities are kept in memory


# ---------------------------------------------------------------------------- the weights file


@dataclass(frozen=True)
class SegmentationSpec:
    """Everything needed to rebuild a trained segmentation model besides its tensors."""

    architecture: str
    backbone: str
    output_stride: int
    class_names: tuple[str, ...]  # background first; the model has one output per name
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def num_classes(self) -> int:
        """The number of model outputs (background included)."""
        return len(self.class_names)

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata of this spec (see the module docstring)."""
        return {
            "rpnet_format": WEIGHTS_FORMAT,
            "architecture": self.architecture,
            "backbone": self.backbone,
            "output_stride": str(self.output_stride),
            "class_names": json.dumps(list(self.class_names)),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str] | None, path: Path) -> SegmentationSpec:
        """The spec stored in ``path``'s metadata; a DataError naming ``path`` if it has none."""
        metadata = metadata or {}
        if metadata.get("rpnet_format") != WEIGHTS_FORMAT:
            raise DataError(f"{path}: not a segmentation model written by `rpnet train-seg` "
                            f"(no {WEIGHTS_FORMAT!r} metadata)")
        try:
            return cls(
                architecture=metadata["architecture"], backbone=metadata["backbone"],
                output_stride=int(metadata["output_stride"]),
                class_names=tuple(json.loads(metadata["class_names"])),
                mean=tuple(json.loads(metadata["mean"])), std=tuple(json.loads(metadata["std"])),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: damaged segmentation metadata ({type(exc).__name__}: {exc})") from None


def build_model(spec: SegmentationSpec) -> nn.Module:
    """The untrained model ``spec`` describes (batch norm as ordinary BN: in eval mode frozen and
    ordinary BN compute the same thing, and their state-dict keys are the same)."""
    return build_segmentation_model(spec.architecture, backbone=spec.backbone, num_classes=spec.num_classes,
                                    output_stride=spec.output_stride)


def save_segmentation_weights(path: str | Path, model: nn.Module, spec: SegmentationSpec) -> Path:
    """``model``'s state dict with ``spec`` as metadata, as safetensors, written atomically
    (byte for byte the same file for the same weights and spec)."""
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return save_safetensors(path, module.state_dict(), spec.to_metadata())


def read_spec(path: str | Path) -> SegmentationSpec:
    """The :class:`SegmentationSpec` of a weights file, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata()
    except Exception as exc:  # safetensors raises its own error types for a foreign or damaged file
        raise DataError(f"{path}: not a safetensors weights file ({type(exc).__name__}: {exc})") from None
    return SegmentationSpec.from_metadata(metadata, path)


def load_segmentation_model(path: str | Path) -> tuple[nn.Module, SegmentationSpec]:
    """Rebuild the model a ``train-seg`` weights file describes and load its weights (strict);
    returned in eval mode on the CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    spec = read_spec(path)
    try:
        model = build_model(spec)
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from None
    state = load_file(str(path))
    shapes = model.state_dict()
    wrong = [f"{key} {tuple(value.shape)} (expected {tuple(shapes[key].shape)})" for key, value in state.items()
             if key in shapes and tuple(value.shape) != tuple(shapes[key].shape)]
    if wrong:
        raise DataError(f"{path}: its metadata describes a {spec.architecture} on {spec.backbone} with "
                        f"{spec.num_classes} classes, but {len(wrong)} tensors have other shapes: {', '.join(wrong[:4])}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(f"{path}: weights do not fit a {spec.architecture} on {spec.backbone}: "
                        f"missing {missing[:8]}, unexpected {unexpected[:8]}")
    return model.eval(), spec


# ---------------------------------------------------------------------------- inference


def normalize_image(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32, ``(x / 255 - mean) / std`` per channel."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / UINT8_MAX
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean_t) / std_t).unsqueeze(0)


def tile_layout(length: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis of ``length`` pixels: (start, keep_from, keep_to), absolute positions.

    Tiles of ``tile`` pixels start every ``tile - overlap`` pixels, the last one flush with the
    end. Each keeps its part from ``overlap // 2`` inside its start to ``overlap // 2`` inside its
    end, except at the ends of the axis, so the kept parts cover every pixel (they may overlap
    near the last tile) and no kept pixel is within ``overlap // 2`` of a cut. An axis no longer
    than ``tile`` is one tile.
    """
    if tile <= overlap or overlap < 0:
        raise ValueError(f"need 0 <= overlap < tile, got tile {tile}, overlap {overlap}")
    if length <= tile:
        return [(0, 0, length)]
    step, margin = tile - overlap, overlap // 2
    starts = list(range(0, length - tile, step)) + [length - tile]
    return [(s, 0 if s == 0 else s + margin, length if s + tile == length else s + tile - margin) for s in starts]


def tiled_logits(model: nn.Module, x: Tensor, tile: int, overlap: int) -> Tensor:
    """``model(x)`` computed tile by tile: x (B, 3, H, W) -> logits (B, C, H, W).

    Equal to one pass wherever the model's output at a pixel depends only on inputs less than
    ``overlap // 2`` pixels away (and the model's grid does not depend on where the tile starts);
    otherwise an approximation that is exact in the middle of each tile.
    """
    height, width = x.shape[-2:]
    total: Tensor | None = None
    weight = x.new_zeros((1, 1, height, width))
    for y0, ky0, ky1 in tile_layout(height, tile, overlap):
        for x0, kx0, kx1 in tile_layout(width, tile, overlap):
            out = model(x[..., y0:y0 + tile, x0:x0 + tile])
            if total is None:
                total = x.new_zeros((x.shape[0], out.shape[1], height, width))
            total[..., ky0:ky1, kx0:kx1] += out[..., ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0]
            weight[..., ky0:ky1, kx0:kx1] += 1
    assert total is not None
    return total / weight


def _logits(model: nn.Module, x: Tensor, tile_size: int | None, overlap: int) -> Tensor:
    if tile_size is None or max(x.shape[-2:]) <= tile_size:
        return model(x)
    return tiled_logits(model, x, tile_size, overlap)


@torch.no_grad()
def multiscale_probs(model: nn.Module, x: Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
                     tile_size: int | None = None, tile_overlap: int = DEFAULT_TILE_OVERLAP) -> Tensor:
    """Class probabilities averaged over scales (and mirror images): x (1, 3, H, W) -> (C, H, W).

    At each scale the normalised image is resized bilinearly, run (with its mirror image in the
    same batch when ``flip``), the logits resized back to (H, W) and turned into softmax
    probabilities; the mean over all passes is returned. ``model(x)`` must map (B, 3, h, w) to
    logits (B, C, h, w).
    """
    if not scales:
        raise ValueError("need at least one scale")
    height, width = x.shape[-2:]
    total: Tensor | None = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = x if size == (height, width) else F.interpolate(x, size=size, mode="bilinear",
                                                                 align_corners=ALIGN_CORNERS)
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        logits = _logits(model, batch, tile_size, tile_overlap).float()
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=ALIGN_CORNERS)
        probs = logits.softmax(dim=1)
        probs = probs[0] + probs[1].flip(-1) if flip else probs[0]
        total = probs if total is None else total + probs
    assert total is not None
    return total / (len(scales) * (2 if flip else 1))


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An image array as (H, W, 3) uint8: grey (H, W) is repeated, RGBA drops alpha."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8, got {image.dtype} "
                         "(read files with rpnet.data.images.read_image)")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")


class Predictor:
    """A trained segmentation model that labels images.

    ``predictor(image)`` takes an (H, W, 3) uint8 RGB array (grey and RGBA arrays are accepted)
    or an image file path and returns the (H, W) uint8 label map: 0 background, k for
    ``class_names[k]``. :meth:`probabilities` gives the (C, H, W) float32 class probabilities.

    Build one with :meth:`from_weights`; the constructor takes a model already built.
    """

    def __init__(self, model: nn.Module, spec: SegmentationSpec, *, device: str | torch.device = "auto",
                 scales: Sequence[float] = (1.0,), flip: bool = False,
                 tile_size: int | None = DEFAULT_TILE_SIZE, tile_overlap: int = DEFAULT_TILE_OVERLAP,
                 max_side: int | None = DEFAULT_MAX_SIDE) -> None:
        if tile_size is not None and not 0 <= tile_overlap < tile_size:
            raise ConfigError(f"tile overlap must be in [0, tile size {tile_size}), got {tile_overlap}")
        if max_side is not None and max_side < 1:
            raise ConfigError(f"max side must be positive, got {max_side}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.spec = spec
        self.scales = tuple(scales)
        self.flip = flip
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.max_side = max_side

    @classmethod
    def from_weights(cls, path: str | Path, classes: str | Path | Sequence[str] | None = None,
                     device: str = "auto", **options) -> Predictor:
        """Load a ``train-seg`` weights file. ``classes``: a class-list file or a list of names
        (background first) replacing the names stored in the file; ``options`` go to the
        constructor (scales, flip, tile_size, tile_overlap, max_side)."""
        model, spec = load_segmentation_model(path)
        if classes is not None:
            names = read_class_list(classes) if isinstance(classes, (str, Path)) else list(classes)
            if len(names) != spec.num_classes:
                where = classes if isinstance(classes, (str, Path)) else "classes"
                raise DataError(f"{where}: {len(names)} class names, but the model in {path} has "
                                f"{spec.num_classes} outputs")
            spec = SegmentationSpec(spec.architecture, spec.backbone, spec.output_stride, tuple(names),
                                    spec.mean, spec.std)
        return cls(model, spec, device=device, **options)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def _image(self, image: np.ndarray | str | Path) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return read_image(image)
        return as_rgb(image)

    def _working_probabilities(self, image: np.ndarray) -> Tensor:
        """(C, h, w) probabilities at the working size: the image's own, or, for an image whose long side
        exceeds ``max_side``, the image shrunk to it first (PIL bilinear on the 8-bit pixels), so that no
        full-size array of C channels is ever held."""
        height, width = image.shape[:2]
        if self.max_side is not None and max(height, width) > self.max_side:
            shrink = self.max_side / max(height, width)
            size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        x = normalize_image(image, self.spec.mean, self.spec.std).to(self.device)
        return multiscale_probs(self.model, x, self.scales, self.flip, self.tile_size, self.tile_overlap)

    def probabilities(self, image: np.ndarray | str | Path) -> np.ndarray:
        """Class probabilities (C, H, W) float32 of an image (array or file), summing to 1 over C. Above
        ``max_side`` they are computed at that size and resized bilinearly (C x H x W floats: labels
        from :meth:`__call__` need far less memory)."""
        image = self._image(image)
        probs = self._working_probabilities(image)
        if tuple(probs.shape[-2:]) != image.shape[:2]:
            probs = F.interpolate(probs[None], size=image.shape[:2], mode="bilinear", align_corners=ALIGN_CORNERS)[0]
        return probs.cpu().numpy()

    def __call__(self, image: np.ndarray | str | Path) -> np.ndarray:
        """The (H, W) uint8 label map of an image (array or file): the most probable class of each pixel.
        Above ``max_side`` the probabilities are resized to the image a band of rows at a time
        (:func:`banded_argmax`), so memory stays near the working size's whatever the image's."""
        image = self._image(image)
        probs = self._working_probabilities(image)
        if tuple(probs.shape[-2:]) == image.shape[:2]:
            return probs.argmax(dim=0).to(torch.uint8).cpu().numpy()
        return banded_argmax(probs, image.shape[:2])


def banded_argmax(probs: Tensor, size: tuple[int, int], rows: int = BAND_ROWS) -> np.ndarray:
    """The argmax over classes of ``probs`` (C, h, w) resized bilinearly to ``size`` (H, W), computed ``rows``
    output rows at a time: (H, W) uint8. Each band samples the same points ``F.interpolate`` (align_corners
    False) would: source coordinate (dst + 0.5) * h / H - 0.5, clamped at the border."""
    height, width = size
    xs = (torch.arange(width, dtype=torch.float32, device=probs.device) + 0.5) / width * 2 - 1
    labels = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        ys = (torch.arange(top, bottom, dtype=torch.float32, device=probs.device) + 0.5) / height * 2 - 1
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]  # (1, rows, W, (x, y))
        band = F.grid_sample(probs[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        labels[top:bottom] = band[0].argmax(dim=0).to(torch.uint8).cpu().numpy()
    return labels


# ---------------------------------------------------------------------------- files in, files out


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files from files and folders: a folder gives its files with an image suffix
    (:data:`IMAGE_SUFFIXES`, any case), sorted, not recursing; a file is taken as given."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            found += images
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"input not found: {path}")
    return found


def output_names(paths: Sequence[Path]) -> list[str]:
    """A distinct output name per input: the file's stem, or stem_suffix where two stems clash
    (``a.jpg`` and ``a.png`` -> ``a_jpg``, ``a_png``); numbered if they still clash."""
    stems = [p.stem for p in paths]
    names = [s if stems.count(s) == 1 else f"{s}_{p.suffix.lstrip('.').lower()}" for s, p in zip(stems, paths)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def predict_files(predictor: Predictor, inputs: Iterable[str | Path], out_dir: str | Path) -> list[Path]:
    """Label every image in ``inputs`` (files or folders, see :func:`collect_images`).

    Writes ``OUT/masks/<name>.png`` (palette PNG, the labels) and ``OUT/overlays/<name>.jpg``
    (the class colours over the image) per image, ``OUT/legend.png`` (each class's colour), and returns
    the mask paths. A file that is not
    a readable image is reported when met (one log line naming it and why) and skipped; once the
    others are labelled, a DataError lists every file that failed. An input path that does not
    exist stops the run before any image is labelled. Under torchrun each rank labels every R-th
    image (the output names are decided over all images first, so they never collide).
    """
    from .engine.distributed import all_reduce_sum, shard, world
    from .engine.progress import progress_bar

    out_dir = Path(out_dir)
    paths = collect_images(inputs)
    if world().is_main:  # what a killed predict left half-written (a second predict into one OUT is not supported)
        for folder in ("masks", "overlays"):
            remove_temporaries(out_dir / folder)
        save_image(out_dir / LEGEND, legend_image(predictor.class_names))  # what the overlays' colours mean
    written = []
    failed = np.zeros(len(paths), dtype=np.int64)  # (N,) 1 where image i could not be read, over all ranks
    current = world()
    mine = shard(list(enumerate(output_names(paths))), current)
    bar = progress_bar(len(mine), "predict", "img", enabled=current.is_main)
    try:
        for index, name in mine:
            try:
                image = read_image(paths[index])
            except DataError as exc:  # its message names the file and what is wrong with it
                log.error("predict: %s (skipped)", exc)
                failed[index] = 1
            else:
                labels = predictor(image)
                written.append(save_mask(out_dir / "masks" / f"{name}.png", labels))
                save_image(out_dir / "overlays" / f"{name}.jpg", label_overlay(image, labels))
            bar.update(1)
    finally:
        bar.close()
    failed = all_reduce_sum(failed)  # every rank learns every rank's failures (and waits for the others)
    log.info("predict: %d masks written to %s", len(written), out_dir / "masks")
    if failed.any():
        bad = [str(paths[i]) for i in np.flatnonzero(failed)]
        raise DataError(f"{len(bad)} of {len(paths)} images could not be read and have no mask "
                        f"(the others are in {out_dir / 'masks'}): {', '.join(bad)}")
    return written


__all__ = [
    "SegmentationSpec", "Predictor", "WEIGHTS_FORMAT", "IMAGE_SUFFIXES", "build_model",
    "save_segmentation_weights", "read_spec", "load_segmentation_model", "normalize_image", "tile_layout",
    "tiled_logits", "multiscale_probs", "banded_argmax", "as_rgb", "collect_images", "output_names",
    "predict_files",
]
