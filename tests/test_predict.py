"""rpnet.predict: the weights format, tiling, the Predictor and `rpnet predict` on mixed image files."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rpnet.cli import main
from rpnet.errors import DataError
from rpnet.io import load_mask
from rpnet.predict import (
    Predictor, SegmentationSpec, build_model, load_segmentation_model, multiscale_probs,
    output_names, read_spec, save_segmentation_weights, tile_layout, tiled_logits,
)

SPEC = SegmentationSpec("deeplab_largefov", "resnet18", 16, ("background", "a", "b"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_segmentation_weights(tmp_path_factory.mktemp("seg") / "model.safetensors", build_model(SPEC), SPEC)


class SmallReach(nn.Module):
    """Two 3x3 convolutions at full resolution: each output sees inputs at most 2 pixels away."""

    def __init__(self, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 3, padding=1))

    def forward(self, x):
        return self.net(x)


def test_weights_carry_the_spec_and_load_into_the_same_model(weights):
    assert read_spec(weights) == SPEC
    model, spec = load_segmentation_model(weights)
    torch.manual_seed(0)
    fresh = build_model(SPEC).eval()  # the same seed: the same initial weights as the saved model
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fresh(x))


def test_weights_whose_metadata_contradicts_their_tensors_are_named(tmp_path):
    import dataclasses

    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    path = save_segmentation_weights(tmp_path / "m.safetensors", build_model(SPEC), SPEC)
    lying = dataclasses.replace(SPEC, class_names=(*SPEC.class_names, "extra"))  # one class more than the head has
    save_file(load_file(str(path)), str(tmp_path / "lying.safetensors"), metadata=lying.to_metadata())
    with pytest.raises(DataError, match=r"lying.safetensors: its metadata describes .* tensors have other shapes"):
        load_segmentation_model(tmp_path / "lying.safetensors")


def test_a_weights_file_without_metadata_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))
    with pytest.raises(DataError, match="plain.safetensors"):
        read_spec(path)
    with pytest.raises(DataError, match="missing.safetensors"):
        read_spec(tmp_path / "missing.safetensors")


def test_tile_layout_by_hand():
    # tiles of 40 every 30 px; each keeps the inner half of each 10 px overlap (5 px)
    assert tile_layout(100, 40, 10) == [(0, 0, 35), (30, 35, 65), (60, 65, 100)]
    assert tile_layout(40, 40, 10) == [(0, 0, 40)]
    # the last tile is flush with the end and overlaps more; the kept parts still meet
    assert tile_layout(75, 40, 10) == [(0, 0, 35), (30, 35, 65), (35, 40, 75)]


def test_tiling_equals_one_pass_for_a_model_that_sees_two_pixels_around():
    model = SmallReach().eval()
    x = torch.randn(2, 3, 101, 77)
    with torch.no_grad():
        direct = model(x)
        tiled = tiled_logits(model, x, tile=32, overlap=8)  # keeps 4 px away from every cut >= the reach of 2
    torch.testing.assert_close(tiled, direct, atol=1e-5, rtol=0)
    with torch.no_grad():
        probs_direct = multiscale_probs(model, x[:1], (1.0, 0.5), flip=True)
        probs_tiled = multiscale_probs(model, x[:1], (1.0, 0.5), flip=True, tile_size=32, tile_overlap=8)
    torch.testing.assert_close(probs_tiled, probs_direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(probs_direct.sum(0), torch.ones(101, 77))


def test_predictor_on_arrays_grey_and_rgba_and_large_images():
    predictor = Predictor(SmallReach(), SegmentationSpec("x", "y", 8, ("bg", "a", "b")), device="cpu",
                          tile_size=32, tile_overlap=8, max_side=50)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    labels = predictor(rgb)
    assert labels.shape == (30, 20) and labels.dtype == np.uint8 and labels.max() <= 2
    rgba = np.concatenate([rgb, np.full((30, 20, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(predictor(rgba), labels)
    grey = rgb[..., 0]
    assert np.array_equal(predictor(grey), predictor(np.repeat(grey[..., None], 3, axis=2)))
    big = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)  # beyond max_side: run at 50 px, answered at full size
    probs = predictor.probabilities(big)
    assert probs.shape == (3, 120, 90) and np.allclose(probs.sum(0), 1, atol=1e-5)
    # the labels of a large image come a band of rows at a time: the argmax of the same resized probabilities
    assert np.array_equal(predictor(big), probs.argmax(axis=0))
    with pytest.raises(ValueError, match="shape"):
        predictor(np.zeros((4, 4, 2), np.uint8))


def test_banded_argmax_samples_where_interpolate_does():
    from rpnet.predict import banded_argmax

    # two classes over a 2 x 3 map, resized to 5 x 7 (odd sizes, bands of 2 rows): the bilinear probabilities
    # of F.interpolate (align_corners False), argmax'd, whatever the band
    probs = torch.tensor([[[0.9, 0.2, 0.6], [0.1, 0.7, 0.3]]])
    probs = torch.cat([probs, 1 - probs])
    full = torch.nn.functional.interpolate(probs[None], size=(5, 7), mode="bilinear", align_corners=False)[0]
    for rows in (1, 2, 5):
        np.testing.assert_array_equal(banded_argmax(probs, (5, 7), rows=rows), full.argmax(0).numpy())
    # by hand at the corner: (0.5) * 3/7 - 0.5 < 0 is clamped to column 0, row 0: class 0 has 0.9
    assert banded_argmax(probs, (5, 7))[0, 0] == 0


def test_from_weights_with_a_class_list(weights, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("background\ncat\ndog\n")
    assert Predictor.from_weights(weights, classes=classes, device="cpu").class_names == ("background", "cat", "dog")
    classes.write_text("background\ncat\n")
    with pytest.raises(DataError, match="classes.txt"):
        Predictor.from_weights(weights, classes=classes, device="cpu")


def test_public_import():
    import rpnet

    assert rpnet.Predictor is Predictor


def test_output_names_keep_clashing_stems_apart(tmp_path):
    paths = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.png"]
    assert output_names(paths) == ["a_jpg", "a_png", "b"]


def write_mixed_images(folder):
    """One image per kind users have: RGB PNG, JPEG, grey PNG, RGBA PNG, 16-bit grey PNG."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    rgb = rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb[:20]).save(folder / "photo.jpg")
    Image.fromarray(rgb[:, :30, 0]).save(folder / "grey.png")
    Image.fromarray(np.concatenate([rgb, rgb[..., :1]], axis=2), mode="RGBA").save(folder / "alpha.png")
    Image.fromarray((rng.integers(0, 65536, (16, 16))).astype(np.uint16)).save(folder / "deep.png")
    (folder / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    return {"rgb": (24, 36), "photo": (20, 36), "grey": (24, 30), "alpha": (24, 36), "deep": (16, 16)}


def test_cli_predict_on_a_folder_of_mixed_images(weights, tmp_path, capsys, umask_022):
    sizes = write_mixed_images(tmp_path / "in")
    out = tmp_path / "out"
    (out / "overlays").mkdir(parents=True)
    leftover = out / "overlays" / ".im00.k3j9x2ab.tmp.jpg"  # what a predict killed mid-write leaves
    leftover.write_bytes(b"half")
    assert main(["predict", "--weights", str(weights), str(tmp_path / "in"), "--out", str(out), "--device", "cpu"]) == 0
    for name, size in sizes.items():
        mask = load_mask(out / "masks" / f"{name}.png")
        assert mask.shape == size and mask.max() <= 2
        with Image.open(out / "masks" / f"{name}.png") as img:
            assert img.mode == "P"
        with Image.open(out / "overlays" / f"{name}.jpg") as img:
            assert img.size == (size[1], size[0]) and img.mode == "RGB"
        for output in (out / "masks" / f"{name}.png", out / "overlays" / f"{name}.jpg"):
            assert output.stat().st_mode & 0o777 == 0o644, output
    assert "5 masks" in capsys.readouterr().out
    assert not leftover.exists()
    with Image.open(out / "legend.png") as legend:  # one row per foreground class, its colour at the left
        rows = np.asarray(legend.convert("RGB"))
    assert rows.shape[0] == 20 * (len(SPEC.class_names) - 1)
    assert tuple(rows[10, 10]) == (128, 0, 0)  # class 1's VOC colour


def test_cli_predict_goes_past_a_bad_file_and_fails_at_the_end(weights, tmp_path, capsys, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name)
    Image.fromarray(rng.random((20, 24), dtype=np.float32), mode="F").save(folder / "b_float.tif")  # sorted between
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(weights), str(folder), "--out", str(out), "--device", "cpu"]) == 1
    for name in ("a", "c"):
        assert load_mask(out / "masks" / f"{name}.png").shape == (20, 24)
        assert (out / "overlays" / f"{name}.jpg").is_file()
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "c.png"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rpnet: error")]
    assert len(errors) == 1 and "b_float.tif" in errors[0] and "1 of 3" in errors[0]
    reports = [r.getMessage() for r in caplog.records if "b_float.tif" in r.getMessage()]
    assert len(reports) == 1 and "float" in reports[0]  # reported when met, with the reason


def test_cli_predict_names_a_bad_input_in_one_line(weights, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for bad in (broken, tmp_path / "missing.jpg"):
        assert main(["predict", "--weights", str(weights), str(bad), "--out", str(tmp_path / "o")]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rpnet: error")]
        assert len(errors) == 1 and bad.name in errors[0]


def test_weights_file_gets_the_usual_permissions(tmp_path, umask_022):
    path = save_segmentation_weights(tmp_path / "model.safetensors", SmallReach(), SPEC)
    assert path.stat().st_mode & 0o777 == 0o644


def test_weights_file_is_the_same_bytes_for_the_same_model_and_spec(tmp_path):
    model = SmallReach()
    first = save_segmentation_weights(tmp_path / "a.safetensors", model, SPEC).read_bytes()
    assert all(save_segmentation_weights(tmp_path / f"b{i}.safetensors", model, SPEC).read_bytes() == first
               for i in range(3))


def test_a_folder_gives_every_image_a_dataset_would_read_gif_included(tmp_path):
    from rpnet.data.folder import IMAGE_SUFFIXES as DATASET_SUFFIXES
    from rpnet.predict import IMAGE_SUFFIXES, collect_images

    assert set(IMAGE_SUFFIXES) == set(DATASET_SUFFIXES) and ".gif" in IMAGE_SUFFIXES
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "anim.GIF")
    (tmp_path / "notes.txt").write_text("x")
    assert collect_images([tmp_path]) == [tmp_path / "anim.GIF"]


def test_an_image_over_pils_size_limit_is_named_not_a_traceback(tmp_path, monkeypatch):
    from rpnet.data.images import read_image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels is over twice the limit: a bomb
    with pytest.raises(DataError, match="cannot read image .*huge.png: .* shrink it first"):
        read_image(tmp_path / "huge.png")
