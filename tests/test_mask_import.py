"""rpnet import-masks: labelme polygons and masks, COCO files and CVAT's colour masks drawn pixel for pixel,
every problem named, nothing written half, the user's files never replaced without --overwrite."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from rpnet import cli
from rpnet.config import DataConfig
from rpnet.data.build import calibration_dataset
from rpnet.errors import DataError
from rpnet.io import load_mask, save_image
from rpnet.mask_import import class_index, import_masks, mask_shape_pixels, paint, Region, shape_pixels
from rpnet.mask_export import coco_instances, PseudoMask

CLASSES = ["background", "cat", "dog"]


def dataset(root, names=("a.jpg", "b.png"), size=(6, 8)):
    """A folder dataset: images of ``size`` (H, W), classes.txt, tags.csv."""
    for name in names:
        save_image(root / "images" / name, np.full((*size, 3), 90, np.uint8))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "tags.csv").write_text("image,tags\n" + "".join(f"{n},cat\n" for n in names))
    return root


def labelme(path, image, shapes, size=(6, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "5.4.1", "flags": {}, "imagePath": f"../images/{image}", "imageData": None,
                                "imageHeight": size[0], "imageWidth": size[1],
                                "shapes": [{"label": label, "points": points, "shape_type": kind, "group_id": None,
                                            "flags": {}} for label, kind, points in shapes]}))
    return path


def test_shapes_are_drawn_as_labelme_draws_them_outline_included():
    # A polygon on the pixel grid (1, 1)-(4, 1)-(4, 3)-(1, 3): PIL fills and outlines it, so x 1..4 and
    # y 1..3 inclusive: 4 x 3 pixels.
    pixels = shape_pixels("polygon", [[1, 1], [4, 1], [4, 3], [1, 3]], (6, 8))
    expected = np.zeros((6, 8), bool)
    expected[1:4, 1:5] = True
    np.testing.assert_array_equal(pixels, expected)
    # a rectangle given by two corners, in any order, is the same region
    np.testing.assert_array_equal(shape_pixels("rectangle", [[4, 3], [1, 1]], (6, 8)), expected)
    # a circle of radius 1 around (3, 2): the centre and its four neighbours
    circle = shape_pixels("circle", [[3, 2], [4, 2]], (6, 8))
    assert circle.sum() == 5 and circle[2, 2:5].all() and circle[1, 3] and circle[3, 3]
    with pytest.raises(ValueError, match="not an area"):
        shape_pixels("line", [[0, 0], [3, 3]], (6, 8))
    with pytest.raises(ValueError, match="not an area"):
        shape_pixels("polygon", [[0, 0], [3, 3]], (6, 8))


def test_paint_reports_overlaps_of_different_classes_only():
    a = np.zeros((2, 3), bool)
    a[:, :2] = True
    b = np.zeros((2, 3), bool)
    b[:, 1:] = True
    labels, problems = paint([Region(1, a, "shape 1"), Region(1, b, "shape 2")], (2, 3), "x.json")
    assert labels.tolist() == [[1, 1, 1], [1, 1, 1]] and problems == []
    _, problems = paint([Region(1, a, "shape 1 ('cat')"), Region(2, b, "shape 2 ('dog')")], (2, 3), "x.json")
    assert problems == ["x.json: shape 1 ('cat') and shape 2 ('dog') overlap on 2 pixels"]
    # background and ignore regions may lie over anything: classes first, then background, then ignore
    labels, problems = paint([Region(255, b, "i"), Region(0, a, "bg"), Region(2, b, "dog")], (2, 3), "x")
    assert labels.tolist() == [[0, 255, 255], [0, 255, 255]] and problems == []
    assert class_index(CLASSES) == {"background": 0, "cat": 1, "dog": 2, "_background_": 0, "__background__": 0,
                                    "__ignore__": 255}


def test_labelme_files_become_the_folder_layouts_masks_and_a_calibration_split(tmp_path):
    root = dataset(tmp_path / "data")
    src = tmp_path / "labelme"
    labelme(src / "a.json", "a.jpg", [("cat", "polygon", [[1, 1], [4, 1], [4, 3], [1, 3]]),
                                      ("dog", "rectangle", [[6, 4], [7, 5]]),
                                      ("__ignore__", "rectangle", [[0, 5], [0, 5]])])
    labelme(src / "b.json", "b.png", [])  # nothing outlined: all background
    result = import_masks(src, "labelme", root, split="calib")
    assert result["masks"] == 2 and len(result["written"]) == 3 and result["split"] == root / "calib.txt"
    expected = np.zeros((6, 8), np.uint8)
    expected[1:4, 1:5] = 1
    expected[4:6, 6:8] = 2
    expected[5, 0] = 255
    np.testing.assert_array_equal(load_mask(root / "masks" / "a.png"), expected)
    np.testing.assert_array_equal(load_mask(root / "masks" / "b.png"), np.zeros((6, 8), np.uint8))
    assert (root / "calib.txt").read_text() == "a.jpg\nb.png\n"
    # the folder layout reads them back as a calibration split
    images = calibration_dataset(DataConfig(format="folder", root=root, calibration_split="calib"))
    np.testing.assert_array_equal(images[0]["mask"], expected)
    # importing the same again changes nothing
    again = import_masks(src, "labelme", root, split="calib")
    assert again["written"] == [] and len(again["unchanged"]) == 3


def test_every_labelme_problem_is_named_and_nothing_is_written(tmp_path):
    root = dataset(tmp_path / "data")
    src = tmp_path / "labelme"
    labelme(src / "a.json", "a.jpg", [("cat", "polygon", [[0, 0], [5, 0], [5, 5]]), ("dog", "polygon", [[0, 0], [5, 0], [5, 5]]),
                                      ("cow", "polygon", [[0, 0], [1, 0], [1, 1]]), ("cat", "line", [[0, 0], [2, 2]])])
    labelme(src / "gone.json", "gone.jpg", [])
    labelme(src / "b.json", "b.png", [], size=(7, 8))
    with pytest.raises(DataError) as caught:
        import_masks(src, "labelme", root, split="calib")
    message = str(caught.value)
    assert "5 problem(s), nothing written" in message
    assert "shape 3 ('cow'): label 'cow' is not in the class list" in message
    assert "shape 4 ('cat'): a 'line' with 2 points is not an area" in message
    assert "shape 1 ('cat') and shape 2 ('dog') overlap on" in message
    assert "image 'gone.jpg' is not in the dataset's images/" in message
    assert "b.json: labelled at 8x7 but b.png is 8x6" in message
    assert not (root / "masks").exists() and not (root / "calib.txt").exists()


def test_an_existing_mask_with_other_contents_is_kept_unless_overwrite(tmp_path):
    root = dataset(tmp_path / "data")
    src = labelme(tmp_path / "a.json", "a.jpg", [("dog", "rectangle", [[0, 0], [2, 2]])])
    import_masks(src, "labelme", root)
    labelme(src, "a.jpg", [("cat", "rectangle", [[0, 0], [2, 2]])])
    with pytest.raises(DataError, match=r"1 file\(s\) exist with other contents, nothing written"):
        import_masks(src, "labelme", root)
    assert load_mask(root / "masks" / "a.png")[0, 0] == 2
    import_masks(src, "labelme", root, overwrite=True)
    assert load_mask(root / "masks" / "a.png")[0, 0] == 1
    other = tmp_path / "other.txt"
    other.write_text("background\ndog\ncat\n")
    with pytest.raises(DataError, match="list different classes"):
        import_masks(src, "labelme", root, classes=other)


def test_a_coco_file_becomes_masks_pixel_for_pixel(tmp_path):
    root = dataset(tmp_path / "data")
    cat = np.zeros((6, 8), np.uint8)
    cat[0:3, 0:4] = 1
    rle = mask_utils.encode(np.asfortranarray(cat))
    rle["counts"] = rle["counts"].decode("ascii")
    crowd = [[5.0, 3.0, 7.0, 3.0, 7.0, 5.0, 5.0, 5.0]]
    content = {"images": [{"id": 3, "file_name": "frames/a.jpg", "height": 6, "width": 8},
                          {"id": 9, "file_name": "b.png", "height": 6, "width": 8}],
               "categories": [{"id": 7, "name": "dog"}, {"id": 1, "name": "cat"}],
               "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "segmentation": rle, "iscrowd": 0},
                               {"id": 2, "image_id": 3, "category_id": 7, "segmentation": crowd, "iscrowd": 1}]}
    src = tmp_path / "instances.json"
    src.write_text(json.dumps(content))
    result = import_masks(src, "coco", root)
    assert result["masks"] == 2
    expected = cat.copy()
    expected[3:5, 5:7] = 255  # the crowd: pycocotools draws the square x, y in [5, 7] as columns 5-6, rows 3-4
    np.testing.assert_array_equal(load_mask(root / "masks" / "a.png"), expected)
    assert not load_mask(root / "masks" / "b.png").any()
    # an export of these masks imports back to the same masks (the 255 region as a crowd of __ignore__)
    exported = coco_instances([PseudoMask(root / "images" / "a.jpg", root / "masks" / "a.png")], CLASSES)
    src.write_text(json.dumps(exported))
    (root / "masks" / "a.png").unlink()
    import_masks(src, "coco", tmp_path / "data")
    np.testing.assert_array_equal(load_mask(root / "masks" / "a.png"), expected)


def test_coco_problems_are_named(tmp_path):
    root = dataset(tmp_path / "data")
    square = [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]]
    content = {"images": [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 8},
                          {"id": 2, "file_name": "zzz.jpg", "height": 6, "width": 8}],
               "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "horse"}],
               "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "segmentation": square, "iscrowd": 0},
                               {"id": 11, "image_id": 1, "category_id": 2, "segmentation": square, "iscrowd": 0}]}
    src = tmp_path / "instances.json"
    src.write_text(json.dumps(content))
    with pytest.raises(DataError) as caught:
        import_masks(src, "coco", root)
    message = str(caught.value)
    assert "categories ['horse'] are not in the class list" in message
    assert "image 'zzz.jpg' is not in the dataset's images/" in message
    assert "annotation 10 ('cat') and annotation 11 ('dog') overlap on" in message
    assert not (root / "masks").exists()


def test_the_command(tmp_path, capsys):
    root = dataset(tmp_path / "data")
    src = labelme(tmp_path / "lm" / "a.json", "a.jpg", [("cat", "rectangle", [[0, 0], [2, 2]])]).parent
    assert cli.main(["import-masks", str(src), "--format", "labelme", "--out", str(root), "--split", "few"]) == 0
    assert "1 masks imported" in capsys.readouterr().out and (root / "few.txt").read_text() == "a.jpg\n"
    assert cli.main(["import-masks", str(tmp_path / "nowhere"), "--format", "labelme", "--out", str(root)]) == 1
    assert "neither a labelme .json file nor a folder" in capsys.readouterr().err


def png_b64(pixels) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_a_labelme_mask_shape_fills_its_box_and_a_misfit_is_named(tmp_path):
    crop = [[1, 0, 1], [0, 1, 0]]  # 3 wide, 2 high, its top-left pixel at (x 4, y 1)
    pixels = mask_shape_pixels([[4, 1], [6, 2]], png_b64(crop), (6, 8))
    expected = np.zeros((6, 8), bool)
    expected[1, 4] = expected[1, 6] = expected[2, 5] = True
    assert np.array_equal(pixels, expected)
    with pytest.raises(ValueError, match="does not fit the box 4,1-7,2"):
        mask_shape_pixels([[4, 1], [7, 2]], png_b64(crop), (6, 8))
    with pytest.raises(ValueError, match="not a base64 PNG"):
        mask_shape_pixels([[4, 1], [6, 2]], "bm90IGEgcG5n", (6, 8))
    root = dataset(tmp_path / "data")
    path = tmp_path / "lm" / "a.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"imagePath": "a.jpg", "imageHeight": 6, "imageWidth": 8, "shapes": [
        {"label": "dog", "shape_type": "mask", "points": [[4, 1], [6, 2]], "mask": png_b64(crop)}]}))
    import_masks(path.parent, "labelme", root)
    labels = load_mask(root / "masks" / "a.png")
    assert np.array_equal(labels, np.where(expected, 2, 0))


def test_a_cvat_export_becomes_masks_and_its_unknown_colours_and_labels_are_named(tmp_path):
    from PIL import Image

    root = dataset(tmp_path / "data")
    src = tmp_path / "cvat"
    (src / "SegmentationClass").mkdir(parents=True)
    (src / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:128,0,0::\n"
                                      "dog:0,128,0::\n__ignore__:224,224,192::\n")
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[0:2, 0:3] = (128, 0, 0)  # cat
    rgb[4, :] = (0, 128, 0)  # dog
    rgb[5, 7] = (224, 224, 192)  # not sure
    Image.fromarray(rgb).save(src / "SegmentationClass" / "a.png")
    assert import_masks(src, "cvat", root, split="few")["masks"] == 1
    expected = np.zeros((6, 8), np.uint8)
    expected[0:2, 0:3] = 1
    expected[4, :] = 2
    expected[5, 7] = 255
    assert np.array_equal(load_mask(root / "masks" / "a.png"), expected)
    rgb[3, 3] = (1, 2, 3)
    Image.fromarray(rgb).save(src / "SegmentationClass" / "b.png")
    (src / "labelmap.txt").write_text((src / "labelmap.txt").read_text() + "horse:0,0,128::\n")
    Image.fromarray(rgb).save(src / "SegmentationClass" / "zzz.png")
    with pytest.raises(DataError) as caught:
        import_masks(src, "cvat", root, overwrite=True)
    message = str(caught.value)
    assert "line 6: label 'horse' is not in the class list" in message
    assert "b.png: colour (1, 2, 3) (1 pixels) is not in labelmap.txt" in message
    assert "image 'zzz' is not in the dataset's images/" in message
    with pytest.raises(DataError, match="not a CVAT 'Segmentation mask 1.1' export"):
        import_masks(tmp_path, "cvat", root)
