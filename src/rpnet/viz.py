"""Pictures for people: CAM heat maps, label maps in the VOC colours, side-by-side panels."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import IGNORE_INDEX, atomic_path, voc_palette  # noqa: E402

PANEL_INCHES = 2.4


LEGEND_ROW = 20  # pixels per class in legend_image
OVERLAY_ALPHA = 0.5  # weight of the class colour in label_overlay
BAND_ROWS = 64  # rows label_overlay blends at a time


def legend_image(class_names: Sequence[str]) -> np.ndarray:
    """(rows, 240, 3) uint8: a swatch of each foreground class's VOC colour beside its name, one class a
    row (background, unlabelled in an overlay, is left out)."""
    from PIL import Image, ImageDraw

    names = list(class_names)[1:]
    canvas = Image.new("RGB", (240, LEGEND_ROW * max(1, len(names))), "white")
    draw = ImageDraw.Draw(canvas)
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    for row, name in enumerate(names):
        top = row * LEGEND_ROW
        draw.rectangle([4, top + 3, 4 + LEGEND_ROW - 6, top + LEGEND_ROW - 3], fill=tuple(int(v) for v in palette[row + 1]))
        draw.text((LEGEND_ROW + 6, top + 4), name, fill="black")
    return np.asarray(canvas)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The class colours (VOC palette) blended over an (H, W, 3) uint8 image where a pixel is
    labelled with a foreground class; background (0) and ignore (255) pixels show the image unchanged.
    Computed :data:`BAND_ROWS` rows at a time, so a 100-megapixel photo needs no full-size float copies."""
    out = np.empty_like(image, dtype=np.uint8)
    for top in range(0, image.shape[0], BAND_ROWS):
        rows = slice(top, top + BAND_ROWS)
        colours = colorize(labels[rows]).astype(np.float32)
        blended = image[rows].astype(np.float32) * (1 - alpha) + colours * alpha
        foreground = ((labels[rows] != 0) & (labels[rows] != IGNORE_INDEX))[:, :, None]
        out[rows] = np.where(foreground, np.rint(blended), image[rows]).astype(np.uint8)
    return out


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 in the VOC colours (255 = ignore, light grey)."""
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    return palette[np.asarray(labels, dtype=np.uint8)]


def save_panels(path: str | Path, panels: Sequence[tuple[str, np.ndarray, str | None]], columns: int | None = None) -> Path:
    """A row (or grid) of titled pictures as one PNG, written atomically.

    ``panels``: (title, array, cmap) with array (H, W, 3) uint8 or (H, W) float in [0, 1]
    drawn with ``cmap`` (e.g. "jet" for CAMs).
    """
    n = len(panels)
    cols = columns or n
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, arr, cmap) in zip(axes.flat, panels):
        if cmap is None:
            ax.imshow(arr)
        else:
            ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return Path(path)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (jet colours) over an (H, W, 3) uint8 image."""
    colours = (plt.get_cmap("jet")(np.clip(heat, 0, 1))[..., :3] * 255).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + colours * alpha).astype(np.uint8)


def picture_indices(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``n`` images (the same ones on every run): the images an
    eval stage draws."""
    return sorted(set(np.linspace(0, n - 1, num=min(count, n)).round().astype(int).tolist())) if n else []
