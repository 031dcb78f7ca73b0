"""Files on disk: atomic writes, arrays as .npz (no pickle), masks as palette PNGs, metrics.

Every writer here writes to a temporary file in the destination folder and renames it
into place, so a run killed half-way leaves either the old file or the new one, never
a truncated one. Stages that skip finished images on a rerun rely on that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError, OutputError

log = logging.getLogger(__name__)

IGNORE_INDEX = 255  # the "don't care" label in masks (VOC's object borders, crop padding)
DEFAULT_FILE_MODE = 0o666  # what open() would create, before the umask
TEMP_NAME_TRIES = 100  # random temporary names tried before giving up (each clash is ~1 in 4e9)


def _create_temp_beside(path: Path) -> tuple[Path, int]:
    """Create an empty, uniquely named file beside ``path``; return it and its permission bits.

    The file is created the way ``open()`` creates one (mode 0666 less the umask in force
    now, read by the kernel rather than by changing the process-wide umask), so its bits
    are what an ordinary write of ``path`` would get.
    """
    for _ in range(TEMP_NAME_TRIES):
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DEFAULT_FILE_MODE)
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    raise FileExistsError(f"no free temporary name beside {path} after {TEMP_NAME_TRIES} tries")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps ``path``'s suffix so that libraries which pick a format
    from the extension (PIL, numpy) still do so. The result gets the permission bits
    the umask gives a new file (0644 under umask 022), even when the writer replaced the
    temporary file with one of its own (safetensors writes a 0600 file and renames it
    over the path it is given).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path, mode = _create_temp_beside(path)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# What atomic_path names its temporary files: ".<stem>.<8 random characters>.tmp<suffix>".
TEMPORARY_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")


def remove_temporaries(folder: str | Path) -> int:
    """Delete the temporary files a killed writer left under ``folder`` (atomic_path cleans up after
    itself, except when the process dies inside the ``with``); returns how many. Only while no
    process writes there: a live writer's temporary file looks the same."""
    folder = Path(folder)
    stale = [p for p in folder.rglob(".*") if p.is_file() and TEMPORARY_NAME.match(p.name)] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a file


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Compressed .npz, written atomically; load with :func:`load_npz` (pickle off).

    Object arrays are refused: numpy would pickle them, and pickles execute code on load.
    """
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for key, arr in arrays.items():
        if arr.dtype.hasobject:
            raise ValueError(f"array {key!r} has dtype object; only plain numeric/string arrays are saved")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)


# What numpy, zipfile and PIL raise on a truncated, torn or foreign file.
UNREADABLE = (OSError, EOFError, ValueError, zipfile.BadZipFile, UnidentifiedImageError, SyntaxError)


def unreadable(path: Path, exc: BaseException) -> OutputError:
    """The error a reader raises for a file it cannot read: the file, why, and what to do. An
    :class:`~rpnet.errors.OutputError`: where the file is a stage's output, ``rpnet run`` redoes that stage."""
    return OutputError(f"{path} is unreadable ({type(exc).__name__}: {exc}); delete it, or rerun the stage that "
                       "wrote it: a rerun redoes only missing and unreadable files", path)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (pickle off); a :class:`DataError` naming the file when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except UNREADABLE as exc:
        raise unreadable(Path(path), exc) from None


def readable(path: str | Path, then: str = "writing it again") -> bool:
    """Whether a finished output can be read back (a per-image stage's test before skipping an image):
    an .npz whose zip directory is intact, a PNG whose chunks pass their checksums. Cheap: nothing is
    decompressed. An existing file that fails is logged with what the caller does about it (``then``:
    a stage writes it again; the gallery leaves its picture out)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                archive.infolist()
        else:
            with Image.open(path) as img:
                img.verify()
    except UNREADABLE as exc:
        log.warning("%s is unreadable (%s): %s", path, exc, then)
        return False
    return True


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 RGB triples, flattened), 255 -> (224, 224, 192)."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.extend((r, g, b))
    palette[IGNORE_INDEX * 3: IGNORE_INDEX * 3 + 3] = [224, 224, 192]
    return palette


def save_mask(path: str | Path, mask: np.ndarray) -> Path:
    """An (H, W) label map as an 8-bit palette PNG in the VOC colours (labels 0..255)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is (H, W), got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("mask labels must be in 0..255")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(voc_palette())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def load_mask(path: str | Path) -> np.ndarray:
    """A label PNG as (H, W) uint8 indices (palette indices, not colours); a :class:`DataError`
    naming the file when it cannot be read, or when a 16-bit mask holds a value above 255 (it would
    wrap around to another class: 259 is not 3)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise DataError(f"{path}: a mask must be a palette or grey PNG, got mode {img.mode}")
            labels = np.array(img)
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise DataError(f"{path}: mask value {int(labels.max()) if labels.max() > 255 else int(labels.min())} is "
                            "outside 0..255 (labels are class indices, 255 'not sure')")
        return labels.astype(np.uint8)
    except UNREADABLE as exc:
        raise unreadable(Path(path), exc) from None


def save_image(path: str | Path, image: np.ndarray, quality: int = 95) -> Path:
    """An (H, W, 3) uint8 image, format from the suffix (PNG, JPEG at ``quality``)."""
    path = Path(path)
    options = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, **options)
    return path


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line (a training log); lines are small, so one write() is atomic enough."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(dict(record)) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
