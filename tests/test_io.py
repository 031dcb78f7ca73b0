import os
import stat
import tempfile

import numpy as np
import pytest
from PIL import Image

from rpnet import io
from rpnet.errors import DataError


def test_npz_round_trip_without_pickle(tmp_path):
    p = io.save_npz(tmp_path / "a" / "x.npz", cam=np.arange(6, dtype=np.float32).reshape(2, 3), keys=np.array([1, 4]))
    d = io.load_npz(p)
    np.testing.assert_array_equal(d["cam"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(d["keys"], [1, 4])
    assert [f.name for f in p.parent.iterdir()] == ["x.npz"]  # no temp file left


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError):
        io.save_npz(tmp_path / "x.npz", bad=np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "x.npz").exists()


def test_mask_png_is_palette_with_voc_colours(tmp_path):
    m = np.array([[0, 1, 255], [15, 2, 0]], dtype=np.uint8)
    p = io.save_mask(tmp_path / "m.png", m)
    with Image.open(p) as img:
        assert img.mode == "P"
        pal = img.getpalette()
    assert pal[3:6] == [128, 0, 0]  # VOC class 1 (aeroplane) is dark red
    assert pal[15 * 3: 15 * 3 + 3] == [192, 128, 128]  # class 15 (person)
    np.testing.assert_array_equal(io.load_mask(p), m)


def test_a_16_bit_mask_reads_its_values_and_refuses_one_above_255(tmp_path):
    Image.fromarray(np.array([[0, 3], [255, 7]], dtype=np.uint16)).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(io.load_mask(tmp_path / "ok.png"), [[0, 3], [255, 7]])
    Image.fromarray(np.array([[0, 259]], dtype=np.uint16)).save(tmp_path / "wide.png")  # 259 would wrap to 3 (car)
    with pytest.raises(DataError, match="wide.png: mask value 259 is outside 0..255"):
        io.load_mask(tmp_path / "wide.png")


def test_failed_write_leaves_old_file(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["t.txt"]


def test_jsonl_appends_and_reads_back(tmp_path):
    io.append_jsonl(tmp_path / "log.jsonl", {"step": 1})
    io.append_jsonl(tmp_path / "log.jsonl", {"step": 2})
    assert [r["step"] for r in io.read_jsonl(tmp_path / "log.jsonl")] == [1, 2]


def replace_with_private_file(tmp):
    """What safetensors does with the path it is given: write a 0600 temporary file and rename it there."""
    fd, own = tempfile.mkstemp(dir=tmp.parent)
    os.write(fd, b"data")
    os.close(fd)
    os.replace(own, tmp)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_written_files_follow_the_umask_in_force_when_written(tmp_path, umask):
    old = os.umask(umask)  # after `rpnet.io` was imported: the mode must not come from import time
    try:
        plain = io.write_json(tmp_path / "m.json", {"a": 1})
        with io.atomic_path(tmp_path / "w.safetensors") as tmp:
            replace_with_private_file(tmp)
        replaced = tmp_path / "w.safetensors"
    finally:
        os.umask(old)
    for path in (plain, replaced):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    assert replaced.read_bytes() == b"data"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.json", "w.safetensors"]  # no temporary file left


def test_truncated_files_are_unreadable_and_readers_name_them(tmp_path):
    npz = io.save_npz(tmp_path / "a.npz", x=np.arange(1000))
    png = io.save_mask(tmp_path / "a.png", np.arange(64 * 64).reshape(64, 64) % 7)
    assert io.readable(npz) and io.readable(png) and not io.readable(tmp_path / "absent.npz")
    for path in (npz, png):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 20])  # the end cut off: the zip directory, the PNG's last chunks
        assert not io.readable(path)
    with pytest.raises(DataError, match="a.npz is unreadable"):
        io.load_npz(npz)
    png.write_bytes(png.read_bytes()[:100])
    with pytest.raises(DataError, match="a.png is unreadable"):
        io.load_mask(png)


def test_remove_temporaries_deletes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    keep = ["a.npz", ".rpnet", ".rpnet.lock", "notes.tmp", ".hidden.txt"]
    left = [".a.1f2e3d4c.tmp.npz", "sub/.b.k_9x2ab1.tmp.png", ".metrics.0a0b0c0d.tmp.json"]
    for name in keep + left:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert io.remove_temporaries(tmp_path) == 3
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)
    with io.atomic_path(tmp_path / "c.npz") as tmp:  # the name atomic_path gives is one it removes
        assert io.TEMPORARY_NAME.match(tmp.name)
