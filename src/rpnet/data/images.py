"""Reading what every dataset layout shares: images, class lists, paths inside a root.

:func:`read_image` turns whatever PIL can open into one array type, (H, W, 3) uint8
RGB, so that no later stage has to think about grey, palette, alpha or 16-bit
files. Alpha is composited on black (``rgb * alpha / 255``): a fully transparent
pixel becomes black whatever colour the file happened to store under it, so two
files that look the same give the same array.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

MAX_8BIT = 255
PNG_MAX_BIT_DEPTH = 16  # PNG stores integer samples in at most 16 bits
TIFF_BITS_PER_SAMPLE = 258  # the TIFF tag that says how many bits each sample uses
INT32_BIT_DEPTH = 32  # PIL's "I" mode is a signed 32-bit integer
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
DIRECT_TO_RGB_MODES = ("1", "L", "CMYK", "YCbCr", "HSV", "RGBX")
FLOAT_MODE = "F"  # PIL's mode for 32-bit float grey images (float TIFFs)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, upright.

    EXIF orientation is applied (a phone photo stored sideways comes out as shown).
    Grey and palette images are expanded to RGB; alpha is composited on black;
    16-bit (and other wide integer) images are scaled by their bit depth
    (``value * 255 / (2**bits - 1)``, rounded), so 65535 in a 16-bit PNG is 255 and
    the tonal range is kept rather than clipped. Float images (PIL mode "F", e.g. 32-bit
    float TIFFs) are refused: their files do not say what range the values span.

    Raises :class:`DataError` naming ``path`` when the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            return _to_rgb_array(upright, source_format=img.format, tiff_bits=_tiff_bits(img))
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except Image.DecompressionBombError as exc:  # not an OSError: PIL's guard against decompression bombs
        raise DataError(f"cannot read image {path}: {exc} (an image this large is refused; shrink it first)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        # PIL reports truncated or corrupt files as OSError/SyntaxError/ValueError.
        raise DataError(f"cannot read image {path}: {exc}") from None


def _tiff_bits(img: Image.Image) -> int | None:
    tags = getattr(img, "tag_v2", None)
    if tags is None or TIFF_BITS_PER_SAMPLE not in tags:
        return None
    bits = tags[TIFF_BITS_PER_SAMPLE]
    return int(bits[0] if isinstance(bits, tuple) else bits)


def _to_rgb_array(img: Image.Image, *, source_format: str | None, tiff_bits: int | None) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode.startswith("I"):
        grey = _scale_to_8bit(np.asarray(img), _integer_bit_depth(mode, source_format, tiff_bits))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P":
        # A palette with a transparent entry behaves like an alpha image.
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return np.asarray(img, dtype=np.uint8).copy()
    if mode in ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        rgb, alpha = rgba[:, :, :3], rgba[:, :, 3:]
        # Rounded integer division: (x * a + 127) // 255 == round(x * a / 255).
        return ((rgb * alpha + MAX_8BIT // 2) // MAX_8BIT).astype(np.uint8)
    if mode in DIRECT_TO_RGB_MODES:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    if mode == FLOAT_MODE:
        # Refused rather than guessed: scaling by the image's own range would give the same
        # scene different colours in different files.
        raise DataError("32-bit float samples (mode 'F') have no fixed range (0..1, 0..255 or raw "
                        "values); save the image with 8- or 16-bit integer samples")
    raise DataError(f"unsupported image mode {mode!r}")


def _integer_bit_depth(mode: str, source_format: str | None, tiff_bits: int | None) -> int:
    """How many bits an integer-mode image's samples were stored in."""
    if mode.startswith("I;16"):
        return 16
    if source_format == "PNG":
        # Older Pillow opens 16-bit grey PNGs as "I"; the file still holds 16 bits.
        return PNG_MAX_BIT_DEPTH
    if tiff_bits is not None:
        return tiff_bits
    return INT32_BIT_DEPTH


def _scale_to_8bit(values: np.ndarray, bits: int) -> np.ndarray:
    """(H, W) integers stored in ``bits`` bits -> (H, W) uint8, full range kept."""
    top = float(2**bits - 1)
    values = np.clip(values.astype(np.float64), 0.0, top)
    return np.rint(values * (MAX_8BIT / top)).astype(np.uint8)


def safe_join(root: str | Path, relative: str | Path) -> Path:
    """``root / relative``, refusing anything that would land outside ``root``.

    Rejects absolute paths, ``..`` components that climb out, and symlinks whose
    target lies outside ``root`` (checked on the resolved path). Raises
    :class:`DataError` naming the offending path.
    """
    root = Path(root)
    rel = Path(relative)
    if rel.anchor:  # "/x" on POSIX; "C:\\x" or "\\x" on Windows
        raise DataError(f"path {str(relative)!r} must be relative to {root}, not absolute")
    joined = root / rel
    resolved_root = root.resolve()
    if not joined.resolve().is_relative_to(resolved_root):
        raise DataError(f"path {str(relative)!r} leaves the dataset folder {root}")
    return joined


# Names a class list's first line may give the background (labelme writes "_background_").
BACKGROUND_NAMES = ("background", "_background_", "__background__")


def did_you_mean(unknown: Sequence[str], names: Sequence[str]) -> str:
    """``" (did you mean 'dog' for 'Dog', 'person' for 'persn'?)"``: the class each unknown name is most likely
    a slip for (the same letters in another case, or a close spelling); "" when none is close."""
    by_case = {name.casefold(): name for name in names}
    guesses = []
    for name in unknown:
        match = by_case.get(name.casefold()) or next(iter(difflib.get_close_matches(name, names, n=1, cutoff=0.75)), None)
        if match is not None:
            guesses.append(f"{match!r} for {name!r}")
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""


def read_class_list(path: str | Path) -> list[str]:
    """Class names from a text file: background first (:data:`BACKGROUND_NAMES`), one name per line.

    Blank lines and ``#`` comments (whole-line or trailing) are ignored. A name
    that appears twice, or a list with fewer than two names (background plus at
    least one class), or one whose first name is not the background, raises :class:`DataError`
    naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class list not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel and Notepad start with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read class list {path}: {exc}") from None
    names: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name in first_line:
            raise DataError(
                f"{path}: class {name!r} appears twice (lines {first_line[name]} and {number})"
            )
        first_line[name] = number
        names.append(name)
    if len(names) < 2:
        raise DataError(f"{path}: a class list needs background first and at least one class, got {names}")
    backgrounds = [n for n in names if n.lower() in BACKGROUND_NAMES]
    if names[0].lower() not in BACKGROUND_NAMES:
        where = (f"{backgrounds[0]!r} is on line {first_line[backgrounds[0]]}: move it to the top" if backgrounds
                 else "add a first line 'background'")
        raise DataError(f"{path}: the first class must be the background (label 0 of every mask), got "
                        f"{names[0]!r} on line {first_line[names[0]]}; {where}")
    return names


__all__ = ["read_image", "safe_join", "read_class_list"]
