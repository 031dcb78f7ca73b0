"""``rpnet export-masks``: pseudo masks out as PNGs named after the images, one COCO instances file, labelme
files or CVAT's Segmentation mask 1.1.

The COCO side is checked by decoding the exported polygons and RLEs with pycocotools and comparing them
with the masks pixel for pixel, on a mask worked out by hand and on the synthetic dataset's masks used as
pseudo masks (an ignore band painted over each); every format is read back by ``rpnet import-masks`` to
the same masks, pixel for pixel, with pieces no polygon holds (a hole, a corner contact, a line, a pixel).
"""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from rpnet.cli import main
from rpnet.config import load_config, save_config
from rpnet.data.coco import Instance, paint_semantic_mask
from rpnet.data.synthetic import generate
from rpnet.errors import DataError
from rpnet.io import load_mask, save_mask
from rpnet.mask_export import (PseudoMask, class_regions, coco_instances, edge_loops, export_masks, labelme_shapes,
                               pixel_outline)
from rpnet.mask_import import import_masks
from rpnet.layout import WorkDir

# pycocotools' compiled decode predates numpy 2's copy keyword and warns on every call (rpnet.data.coco).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
TINY = dict(n_train=8, n_val=4, size=64, seed=0)
CLASS_NAMES = ["background", "bird", "boat", "car", "cat", "person", "plane"]
TRAIN_IDS = [f"synth_{i:06d}" for i in range(8)]


def hand_mask() -> np.ndarray:
    """(8, 10): bird (label 1) rows 1-3 x cols 2-5 (12 px); car (label 3) in two pieces, rows 5-7 x cols 0-2
    (9 px) and rows 6-7 x cols 7-8 (4 px); row 4 is an ignore band (255) across the whole image."""
    labels = np.zeros((8, 10), np.uint8)
    labels[1:4, 2:6] = 1
    labels[5:8, 0:3] = 3
    labels[6:8, 7:9] = 3
    labels[4, :] = 255
    return labels


@pytest.fixture
def work(tmp_path) -> Path:
    """A work dir as make-pseudo leaves it: make_pseudo/config.yaml (synthetic folder data) and
    make_pseudo/masks/<id>.png, here the dataset's own masks with rows 30-31 set to 255."""
    root = generate(tmp_path / "data", fmt="folder", **TINY)
    work = tmp_path / "work"
    cfg = load_config(CONFIG, [f"data.root={root}", "data.format=folder", f"work_dir={work}"])
    save_config(cfg, WorkDir(work).stage_config("make-pseudo"))
    for image_id in TRAIN_IDS:
        labels = load_mask(root / "masks" / f"{image_id}.png")
        labels[30:32, :] = 255
        save_mask(WorkDir(work).pseudo_masks / f"{image_id}.png", labels)
    return work


def pseudo(work: Path, image_id: str) -> np.ndarray:
    return load_mask(WorkDir(work).pseudo_masks / f"{image_id}.png")


def test_hand_mask_gives_one_whole_region_per_class_as_polygons_along_the_pixel_edges():
    regions = class_regions(hand_mask())
    assert [r["category_id"] for r in regions] == [1, 3]  # no background, no 255
    bird, car = regions
    assert (bird["area"], bird["bbox"]) == (12.0, [2.0, 1.0, 4.0, 3.0])
    # Both car pieces in one annotation: x 0..8, y 5..7.
    assert (car["area"], car["bbox"]) == (13.0, [0.0, 5.0, 9.0, 3.0])
    assert bird["iscrowd"] == car["iscrowd"] == 0
    # pixel (x, y) spans [x, x + 1] x [y, y + 1]: the bird's corners, clockwise from the top left
    assert bird["segmentation"] == [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]]
    assert car["segmentation"] == [[0.0, 5.0, 3.0, 5.0, 3.0, 8.0, 0.0, 8.0], [7.0, 6.0, 9.0, 6.0, 9.0, 8.0, 7.0, 8.0]]
    ignore = class_regions(hand_mask(), ignore_category=7)[-1]
    assert (ignore["category_id"], ignore["iscrowd"], ignore["area"]) == (7, 1, 10.0)
    assert ignore["segmentation"] == [[0.0, 4.0, 10.0, 4.0, 10.0, 5.0, 0.0, 5.0]]
    json.dumps(regions)  # plain numbers


def test_a_hole_or_a_corner_contact_is_an_rle():
    ring = np.zeros((6, 6), np.uint8)
    ring[1:5, 1:5] = 1
    ring[2:4, 2:4] = 0
    assert edge_loops(ring) == [[(1, 1), (5, 1), (5, 5), (1, 5)], [(2, 2), (2, 4), (4, 4), (4, 2)]]  # the hole
    # The ring's runs over the column-major pixels, counted by hand: column 0 and row 0 of column 1 (7
    # zeros), four ones, then row 5 of column 1 and row 0 of column 2 (2 zeros), one, two zeros, one, ...
    (region,) = class_regions(ring)
    by_hand = mask_utils.frPyObjects({"counts": [7, 4, 2, 1, 2, 1, 2, 1, 2, 1, 2, 4, 7], "size": [6, 6]}, 6, 6)
    assert region["segmentation"] == {"size": [6, 6], "counts": by_hand["counts"].decode("ascii")}
    corners = np.zeros((4, 4), bool)
    corners[1, 1] = corners[2, 2] = True
    assert edge_loops(corners) is None  # the two pixels share the corner (2, 2)
    assert isinstance(class_regions(corners.astype(np.uint8))[0]["segmentation"], dict)


def test_pixel_outlines_by_hand():
    step = np.zeros((6, 8), bool)
    step[1, 1:3] = True
    step[2:4, 1:4] = True  # a row of two over two rows of three
    assert pixel_outline(step) == [(1, 1), (2, 1), (3, 2), (3, 3), (1, 3)]
    line = np.zeros((4, 6), bool)
    line[1, 1:5] = True
    assert pixel_outline(line) == [(1, 1), (4, 1)]  # there and back
    single = np.zeros((3, 3), bool)
    single[1, 1] = True
    assert pixel_outline(single) == [(1, 1)]
    shapes = labelme_shapes(np.where(step, 2, 0).astype(np.uint8), ["b", "x", "y"])
    assert [(s["label"], s["shape_type"], s["points"]) for s in shapes] == [
        ("y", "polygon", [[1.0, 1.0], [2.0, 1.0], [3.0, 2.0], [3.0, 3.0], [1.0, 3.0]])]
    (mask,) = labelme_shapes(line.astype(np.uint8), ["b", "x"])  # no polygon holds a line: a mask shape
    assert (mask["shape_type"], mask["points"]) == ("mask", [[1, 1], [4, 1]])


def hard_mask() -> np.ndarray:
    """(64, 64): pieces no polygon holds beside ones it does: a ring with a hole (bird), two pixels touching
    at a corner and a single pixel (car), a line one pixel wide (cat), a staircase (person), an ignore band."""
    labels = np.zeros((64, 64), np.uint8)
    labels[4:20, 4:20] = 1
    labels[8:12, 8:12] = 0
    labels[30, 30] = labels[31, 31] = labels[40, 5] = 3
    labels[50, 10:40] = 4
    for i in range(10):
        labels[20 + i, 40:45 + i] = 5
    labels[60:62, :] = 255
    return labels


@pytest.mark.parametrize("fmt", ["coco", "labelme", "cvat", "png"])
def test_each_export_is_read_back_by_its_import_pixel_for_pixel(work, tmp_path, fmt):
    save_mask(WorkDir(work).pseudo_masks / "synth_000000.png", hard_mask())
    written, count, _ = export_masks(work, tmp_path / "out", fmt)
    data = load_config(WorkDir(work).stage_config("make-pseudo")).data.root
    target = tmp_path / "dataset"  # the images and the class list, no masks
    (target / "images").mkdir(parents=True)
    for image_id in TRAIN_IDS:
        (target / "images" / f"{image_id}.png").write_bytes((data / "images" / f"{image_id}.png").read_bytes())
    (target / "classes.txt").write_text("".join(f"{name}\n" for name in CLASS_NAMES))
    if fmt == "png":
        masks = {p.stem: load_mask(p) for p in (written / "masks").glob("*.png")}
    else:
        src = {"coco": written, "labelme": written, "cvat": written}[fmt]
        assert import_masks(src, fmt, target)["masks"] == count == 8
        masks = {p.stem: load_mask(p) for p in (target / "masks").glob("*.png")}
    assert sorted(masks) == TRAIN_IDS
    for image_id in TRAIN_IDS:
        assert np.array_equal(masks[image_id], pseudo(work, image_id)), image_id
    if fmt == "labelme":  # labelme opens the image beside the outlines
        record = json.loads((written / "synth_000000.json").read_text())
        assert (written / record["imagePath"]).resolve() == (data / "images" / "synth_000000.png").resolve()
        kinds = {(s["label"], s["shape_type"]) for s in record["shapes"]}
        assert {("bird", "mask"), ("cat", "mask"), ("person", "polygon"), ("__ignore__", "polygon")} <= kinds
    if fmt == "cvat":
        assert (written / "labelmap.txt").read_text().splitlines()[:3] == [
            "# label:color_rgb:parts:actions", "background:0,0,0::", "bird:128,0,0::"]
        assert (written / "labelmap.txt").read_text().splitlines()[-1] == "__ignore__:224,224,192::"
        assert (written / "ImageSets" / "Segmentation" / "default.txt").read_text().split() == TRAIN_IDS


def test_hand_mask_document(tmp_path):
    save_mask(tmp_path / "m.png", hand_mask())
    doc = coco_instances([PseudoMask(Path("photos/IMG_1.JPG"), tmp_path / "m.png")], CLASS_NAMES)
    assert doc["images"] == [{"id": 1, "file_name": "IMG_1.JPG", "width": 10, "height": 8}]
    assert [(a["id"], a["image_id"], a["category_id"], a["iscrowd"]) for a in doc["annotations"]] == [
        (1, 1, 1, 0), (2, 1, 3, 0), (3, 1, 7, 1)]  # the ignore band: a crowd region of category __ignore__
    assert [(c["id"], c["name"]) for c in doc["categories"]] == [*list(enumerate(CLASS_NAMES))[1:], (7, "__ignore__")]


def test_coco_export_round_trips_through_pycocotools(work, tmp_path):
    written, count, missing = export_masks(work, tmp_path / "out", "coco")
    assert written == tmp_path / "out" / "instances.json" and count == 8 and missing == []
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(written))
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == [*CLASS_NAMES[1:], "__ignore__"]
    assert sorted(img["file_name"] for img in coco.imgs.values()) == [f"{i}.png" for i in TRAIN_IDS]
    for image in coco.imgs.values():
        labels = pseudo(work, Path(image["file_name"]).stem)
        assert (image["height"], image["width"]) == labels.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        present = sorted(int(v) for v in np.unique(labels) if v not in (0, 255))
        assert sorted(a["category_id"] for a in anns if not a["iscrowd"]) == present  # one per class present
        for ann in anns:
            region = coco.annToMask(ann)
            value = 255 if ann["iscrowd"] else ann["category_id"]
            assert np.array_equal(region, (labels == value).astype(np.uint8))
            assert ann["area"] == region.sum()
        (crowd,) = [a for a in anns if a["iscrowd"]]  # the ignore band (rows 30-31) and the masks' own 255
        assert coco.annToMask(crowd)[30:32].all()


def test_coco_export_reads_back_with_rpnets_coco_painter(work, tmp_path):
    """iscrowd 0: rpnet's COCO reader paints the regions as classes, and the ignore band (a crowd) as 255."""
    written, _, _ = export_masks(work, tmp_path / "out", "coco")
    doc = json.loads(written.read_text())
    for image in doc["images"]:
        instances = tuple(Instance(a["segmentation"], a["category_id"], bool(a["iscrowd"]))
                          for a in doc["annotations"] if a["image_id"] == image["id"])
        painted = paint_semantic_mask(image["height"], image["width"], instances)
        assert np.array_equal(painted, pseudo(work, Path(image["file_name"]).stem))


def test_png_export_renames_to_image_names_and_writes_classes(work, tmp_path):
    written, count, _ = export_masks(work, tmp_path / "out", "png")
    assert count == 8
    assert (written / "classes.txt").read_text().splitlines() == CLASS_NAMES
    assert sorted(p.name for p in (written / "masks").iterdir()) == [f"{i}.png" for i in TRAIN_IDS]
    for image_id in TRAIN_IDS:
        assert np.array_equal(load_mask(written / "masks" / f"{image_id}.png"), pseudo(work, image_id))


def test_missing_masks_are_reported_and_none_is_an_error(work, tmp_path):
    (WorkDir(work).pseudo_masks / "synth_000003.png").unlink()
    _, count, missing = export_masks(work, tmp_path / "out", "png")
    assert (count, missing) == (7, ["synth_000003"])
    for path in (WorkDir(work).pseudo_masks).iterdir():
        path.unlink()
    with pytest.raises(DataError, match="no pseudo masks"):
        export_masks(work, tmp_path / "out", "png")


def test_label_outside_the_class_list_is_an_error(work, tmp_path):
    save_mask(WorkDir(work).pseudo_masks / "synth_000000.png", np.full((64, 64), 7, np.uint8))  # 6 classes
    with pytest.raises(DataError, match="label 7 is not a class"):
        export_masks(work, tmp_path / "out", "coco")


def test_work_dir_without_config_is_an_error(tmp_path):
    with pytest.raises(DataError, match="make-pseudo"):
        export_masks(tmp_path, tmp_path / "out")


def test_command(work, tmp_path, capsys):
    assert main(["export-masks", str(work), "--out", str(tmp_path / "out"), "--format", "coco"]) == 0
    assert capsys.readouterr().out.startswith(f"8 pseudo masks exported to {tmp_path / 'out' / 'instances.json'}")
    (WorkDir(work).pseudo_masks / "synth_000005.png").unlink()
    assert main(["export-masks", str(work), "--out", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    assert "7 pseudo masks exported" in out and "synth_000005" in out
    assert main(["export-masks", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.startswith("rpnet: error:")


def test_stale_pseudo_masks_are_not_exported(work, tmp_path):
    from rpnet.pipeline.fingerprint import stage_fingerprints

    cfg = load_config(WorkDir(work).stage_config("make-pseudo"))
    save_config(cfg, WorkDir(work).config)  # as `rpnet run` leaves it
    (WorkDir(work).stage("make-pseudo") / "done.json").write_text(json.dumps(
        {"fingerprint": stage_fingerprints(cfg)["make-pseudo"], "upstream": {}}))
    with pytest.raises(DataError, match="are stale: what they were made from has changed"):
        export_masks(work, tmp_path / "out", "png")  # its upstream stages are not done: it counts as stale
    assert not (tmp_path / "out").exists()
