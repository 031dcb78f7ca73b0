import os

import numpy as np
import pytest
from PIL import Image

from rpnet.data.images import read_class_list, read_image, safe_join
from rpnet.errors import DataError

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF: the stored image must be turned 90 degrees clockwise to view


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, pixels)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 8 high x 16 wide: left half red, right half blue.
    stored = np.zeros((8, 16, 3), dtype=np.uint8)
    stored[:, :8] = (255, 0, 0)
    stored[:, 8:] = (0, 0, 255)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "phone.jpg")
    # Turned clockwise, it is 16 high x 8 wide and the old left edge is now the top.
    assert out.shape == (16, 8, 3)
    top, bottom = out[1:7].reshape(-1, 3).mean(0), out[9:15].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.full((3, 4), 77, dtype=np.uint8), mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3)
    assert (out == 77).all()


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (1, 3, 3)
    # opaque: unchanged; transparent: black; alpha 128: round(v * 128 / 255)
    np.testing.assert_array_equal(out[0], [[200, 100, 50], [0, 0, 0], [100, 50, 25]])


def test_palette_image_gives_palette_colours(tmp_path):
    img = Image.fromarray(np.array([[0, 1], [1, 2]], dtype=np.uint8), mode="P")
    img.putpalette([0, 0, 0, 10, 20, 30, 200, 150, 100] + [0] * (253 * 3))
    img.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out, [[[0, 0, 0], [10, 20, 30]], [[10, 20, 30], [200, 150, 100]]])


def test_palette_transparency_is_composited_like_alpha(tmp_path):
    img = Image.fromarray(np.array([[1, 2]], dtype=np.uint8), mode="P")
    img.putpalette([0, 0, 0, 10, 20, 30, 200, 150, 100] + [0] * (253 * 3))
    img.save(tmp_path / "t.png", transparency=2)
    np.testing.assert_array_equal(read_image(tmp_path / "t.png"), [[[10, 20, 30], [0, 0, 0]]])


def test_16bit_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 25700, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")  # the file really is 16-bit
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.shape == (1, 6, 3)
    # v * 255 / 65535 = v / 257, rounded; clipping would have made 1000 -> 255
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 4, 100, 128, 255])
    assert (out == out[:, :, :1]).all()


def test_missing_image_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere.jpg"):
        read_image(tmp_path / "nowhere.jpg")


def test_unreadable_image_names_the_path(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpg"):
        read_image(tmp_path / "broken.jpg")


def test_truncated_image_names_the_path(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_safe_join_keeps_paths_inside_root(tmp_path):
    assert safe_join(tmp_path, "a/b.jpg") == tmp_path / "a" / "b.jpg"
    assert safe_join(tmp_path, "a/../b.jpg") == tmp_path / "a/../b.jpg"  # climbs, but stays inside


@pytest.mark.parametrize("bad", ["../x.jpg", "a/../../x.jpg", "/etc/passwd"])
def test_safe_join_refuses_escapes_and_names_the_path(tmp_path, bad):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DataError) as err:
        safe_join(root, bad)
    assert bad in str(err.value)


def test_safe_join_refuses_symlink_escape(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "secret.jpg", root / "link.jpg")
    with pytest.raises(DataError, match="link.jpg"):
        safe_join(root, "link.jpg")


def test_class_list_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\nbackground\n\n  cat  \ndog # a trailing comment\n")
    assert read_class_list(path) == ["background", "cat", "dog"]


def test_class_list_duplicate_names_the_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\ncat\ndog\ncat\n")
    with pytest.raises(DataError, match=r"classes\.txt.*'cat'.*lines 2 and 4"):
        read_class_list(path)


@pytest.mark.parametrize("lines, message", [
    ("bird\ncat\n", r"first class must be the background .* got 'bird' on line 1; add a first line 'background'"),
    ("# mine\nbird\nbackground\ncat\n", r"got 'bird' on line 2; 'background' is on line 3: move it to the top"),
])
def test_class_list_without_background_first_says_so(tmp_path, lines, message):
    (tmp_path / "classes.txt").write_text(lines)
    with pytest.raises(DataError, match=message):
        read_class_list(tmp_path / "classes.txt")
    (tmp_path / "labelme.txt").write_text("_background_\nbird\n")
    assert read_class_list(tmp_path / "labelme.txt") == ["_background_", "bird"]


def test_class_list_missing_or_too_short(tmp_path):
    with pytest.raises(DataError, match="nope.txt"):
        read_class_list(tmp_path / "nope.txt")
    (tmp_path / "one.txt").write_text("background\n")
    with pytest.raises(DataError, match="one.txt"):
        read_class_list(tmp_path / "one.txt")


def test_float_tiff_is_refused_with_the_reason(tmp_path):
    Image.fromarray(np.full((4, 5), 0.5, dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: 32-bit float samples .* 8- or 16-bit"):
        read_image(tmp_path / "f.tif")


def test_did_you_mean_names_the_class_a_tag_is_a_slip_for():
    from rpnet.data.images import did_you_mean

    names = ["cat", "dog", "person", "pottedplant"]
    assert did_you_mean(["Dog"], names) == " (did you mean 'dog' for 'Dog'?)"  # case
    assert did_you_mean(["persn", "potted plant"], names) == \
        " (did you mean 'person' for 'persn', 'pottedplant' for 'potted plant'?)"  # spelling
    assert did_you_mean(["zebra"], names) == ""
