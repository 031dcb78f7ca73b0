"""``rpnet export-masks``: pseudo masks out as PNGs named after the images, or as one COCO instances file.

The COCO side is checked by decoding the exported RLEs with pycocotools and comparing them with the
masks pixel for pixel, on a mask worked out by hand and on the synthetic dataset's masks used as
pseudo masks (an ignore band painted over each).
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
from rpnet.mask_export import PseudoMask, class_regions, coco_instances, export_masks
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


def test_hand_mask_gives_one_whole_region_per_class():
    regions = class_regions(hand_mask())
    assert [r["category_id"] for r in regions] == [1, 3]  # no background, no 255
    bird, car = regions
    assert (bird["area"], bird["bbox"]) == (12.0, [2.0, 1.0, 4.0, 3.0])
    # Both car pieces in one annotation: x 0..8, y 5..7.
    assert (car["area"], car["bbox"]) == (13.0, [0.0, 5.0, 9.0, 3.0])
    assert bird["iscrowd"] == car["iscrowd"] == 0
    # The bird's runs over the column-major pixels, counted by hand: 16 zeros of columns 0-1 and row 0 of
    # column 2, then per column 2-5 three ones and five zeros (rows 4-7, row 0 of the next), ending with
    # rows 4-7 of column 5 and columns 6-9 (4 + 32 zeros).
    by_hand = mask_utils.frPyObjects({"counts": [17, 3, 5, 3, 5, 3, 5, 3, 36], "size": [8, 10]}, 8, 10)
    assert bird["segmentation"] == {"size": [8, 10], "counts": by_hand["counts"].decode("ascii")}
    expected_car = np.zeros((8, 10), np.uint8)
    expected_car[5:8, 0:3] = 1
    expected_car[6:8, 7:9] = 1
    assert np.array_equal(mask_utils.decode(car["segmentation"]), expected_car)
    json.dumps(regions)  # counts are str, everything else plain numbers


def test_hand_mask_document(tmp_path):
    save_mask(tmp_path / "m.png", hand_mask())
    doc = coco_instances([PseudoMask(Path("photos/IMG_1.JPG"), tmp_path / "m.png")], CLASS_NAMES)
    assert doc["images"] == [{"id": 1, "file_name": "IMG_1.JPG", "width": 10, "height": 8}]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in doc["annotations"]] == [(1, 1, 1), (2, 1, 3)]
    assert [(c["id"], c["name"]) for c in doc["categories"]] == list(enumerate(CLASS_NAMES))[1:]


def test_coco_export_round_trips_through_pycocotools(work, tmp_path):
    written, count, missing = export_masks(work, tmp_path / "out", "coco")
    assert written == tmp_path / "out" / "instances.json" and count == 8 and missing == []
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(written))
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == CLASS_NAMES[1:]
    assert sorted(img["file_name"] for img in coco.imgs.values()) == [f"{i}.png" for i in TRAIN_IDS]
    for image in coco.imgs.values():
        labels = pseudo(work, Path(image["file_name"]).stem)
        assert (image["height"], image["width"]) == labels.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        present = sorted(int(v) for v in np.unique(labels) if v not in (0, 255))
        assert sorted(a["category_id"] for a in anns) == present  # one annotation per class present
        for ann in anns:
            region = coco.annToMask(ann)
            assert np.array_equal(region, (labels == ann["category_id"]).astype(np.uint8))
            assert ann["area"] == region.sum()
        # Nothing of the ignore band is exported.
        covered = sum(coco.annToMask(a) for a in anns) if anns else np.zeros(labels.shape, int)
        assert not covered[30:32].any() and covered.max() <= 1


def test_coco_export_reads_back_with_rpnets_coco_painter(work, tmp_path):
    """iscrowd 0: rpnet's COCO reader paints the regions as classes (crowds would become 255)."""
    written, _, _ = export_masks(work, tmp_path / "out", "coco")
    doc = json.loads(written.read_text())
    for image in doc["images"]:
        instances = tuple(Instance(a["segmentation"], a["category_id"], bool(a["iscrowd"]))
                          for a in doc["annotations"] if a["image_id"] == image["id"])
        painted = paint_semantic_mask(image["height"], image["width"], instances)
        expected = pseudo(work, Path(image["file_name"]).stem)
        expected[expected == 255] = 0  # ignore is not exported: it reads back as background
        assert np.array_equal(painted, expected)


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
