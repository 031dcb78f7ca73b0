import logging

import numpy as np
import pytest

from rpnet.config import DataConfig
from rpnet.data.build import (LOADERS, build_dataset, calibration_dataset, calibration_split_file,
                              outside_calibration_split)
from rpnet.errors import ConfigError, DataError
from rpnet.io import load_mask, save_image

from .fixtures import (SBD_MASKS, TRAIN_AUG_BY_HAND, VOC_TRAIN, make_coco, make_folder, make_sbd, make_voc, solid_image,
                       write_lines)


def test_every_format_builds(tmp_path):
    voc = build_dataset(DataConfig(format="voc", root=make_voc(tmp_path / "voc")), "val", masks=True)
    assert voc.ids == ["v1", "v2"] and voc.has_masks and voc.num_classes == 20
    coco = build_dataset(DataConfig(format="coco", root=make_coco(tmp_path / "coco")), "val2014", masks=True)
    assert len(coco) == 2 and coco.has_masks and coco.num_classes == 3
    assert coco[1]["mask"].shape == (16, 16)
    folder = build_dataset(DataConfig(format="folder", root=make_folder(tmp_path / "folder")), "train")
    assert folder.ids == ["a", "d"] and folder.num_classes == 3


def test_train_aug_through_the_config(tmp_path):
    data = DataConfig(format="voc", root=make_voc(tmp_path / "voc"), sbd_root=make_sbd(tmp_path / "sbd"))
    ds = build_dataset(data, "train_aug", for_training=True, masks=True)
    assert ds.ids == TRAIN_AUG_BY_HAND  # all six are tagged
    np.testing.assert_array_equal(ds[ds.ids.index("s3")]["mask"], SBD_MASKS["s3"])


def test_untagged_images_are_reported_and_left_out_for_training(tmp_path, caplog):
    data = DataConfig(format="folder", root=make_folder(tmp_path))
    assert build_dataset(data, "all").ids == ["a", "b", "c", "d"]  # evaluation keeps them
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(data, "all", for_training=True)
    assert ds.ids == ["a", "b"]
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "2 of 4" in message and "c" in message and "d" in message


def test_coco_untagged_image_left_out_for_training(tmp_path):
    ds = build_dataset(DataConfig(format="coco", root=make_coco(tmp_path)), "val2014", for_training=True)
    assert ds.ids == ["COCO_val2014_000000000042"]


def test_fraction_only_when_training_and_keeps_class_proportions(tmp_path):
    root = tmp_path / "many"
    write_lines(root / "classes.txt", ["background", "cat", "dog"])
    rows = ["image,tags"]
    # 24 cat-only, 8 dog-only, 4 both: cat has 28 images, dog 12.
    for i in range(36):
        save_image(root / "images" / f"{i:02d}.png", solid_image(i, size=4))
        rows.append(f"{i:02d}.png," + ("cat" if i < 24 else "dog" if i < 32 else "cat;dog"))
    write_lines(root / "tags.csv", rows)
    data = DataConfig(format="folder", root=root, fraction=0.25)
    assert len(build_dataset(data, "all")) == 36  # no reduction outside training
    ds = build_dataset(data, "all", for_training=True, seed=2)
    counts = ds.tag_matrix().sum(axis=0)
    assert counts[0] in (7, 8) and counts[1] == 3  # 0.25 * 28 = 7, 0.25 * 12 = 3
    again = build_dataset(data, "all", for_training=True, seed=2)
    assert again.ids == ds.ids


def test_transform_and_seed_reach_the_dataset(tmp_path):
    def transform(sample, rng):
        return rng.integers(0, 1000)

    data = DataConfig(format="folder", root=make_folder(tmp_path))
    ds = build_dataset(data, "train", transform, seed=9)
    assert ds[1] == np.random.default_rng([9, 0, 1]).integers(0, 1000)


def test_unknown_format_lists_the_choices(tmp_path):
    data = DataConfig(format="imagenet", root=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"imagenet.*\['coco', 'folder', 'voc'\]"):
        build_dataset(data, "train")
    assert sorted(LOADERS) == ["coco", "folder", "voc"]


def test_root_unset_or_missing(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        build_dataset(DataConfig(format="folder"), "train")
    with pytest.raises(DataError, match="nowhere"):
        build_dataset(DataConfig(format="folder", root=tmp_path / "nowhere"), "train")


def test_empty_split_is_an_error(tmp_path):
    root = make_folder(tmp_path)
    write_lines(root / "empty.txt", [])
    with pytest.raises(DataError, match="'empty'"):
        build_dataset(DataConfig(format="folder", root=root), "empty")


def test_masks_only_when_asked(tmp_path):
    # ground truth is for scoring only: without masks=True no sample carries one and no loader is kept
    data = DataConfig(format="voc", root=make_voc(tmp_path / "voc"))
    plain = build_dataset(data, "val")
    assert not plain.has_masks and plain.mask_loader is None and "mask" not in plain[0]
    assert build_dataset(data, "val", masks=True).has_masks


# --------------------------------------------------------------------------- the calibration split


def test_the_calibration_split_is_training_images_with_masks_in_the_file_order(tmp_path):
    root = make_folder(tmp_path)
    write_lines(root / "calib.txt", ["# outlined by hand", "a.jpg"])
    data = DataConfig(format="folder", root=root, calibration_split="calib")
    assert calibration_split_file(data) == root / "calib.txt"
    images = calibration_dataset(data)
    assert images.ids == ["a"] and images.has_masks
    np.testing.assert_array_equal(images[0]["mask"], load_mask(root / "masks" / "a.png"))
    assert calibration_dataset(DataConfig(format="folder", root=root)) is None
    # the eval stages score everything else
    train = build_dataset(data, "train", masks=True)
    assert outside_calibration_split(train, data).ids == ["d"]
    assert outside_calibration_split(train, DataConfig(format="folder", root=root)).ids == ["a", "d"]


def test_a_calibration_image_outside_the_training_split_or_without_a_mask_is_refused_by_name(tmp_path):
    root = make_folder(tmp_path)
    data = DataConfig(format="folder", root=root, calibration_split="calib")
    write_lines(root / "calib.txt", ["a", "b.png"])  # b is no training image (train.txt: a, d)
    with pytest.raises(DataError, match=r"calib.txt: 1 image\(s\) are not in the training split 'train': b.png"):
        calibration_dataset(data)
    write_lines(root / "calib.txt", ["d"])  # d has no mask
    with pytest.raises(DataError, match=r"1 image\(s\) have no mask: d"):
        calibration_dataset(data)
    write_lines(root / "calib.txt", ["a", "a.jpg"])
    with pytest.raises(DataError, match="twice"):
        calibration_dataset(data)
    write_lines(root / "calib.txt", ["# nothing"])
    with pytest.raises(DataError, match="lists no image"):
        calibration_dataset(data)
    (root / "calib.txt").unlink()
    with pytest.raises(DataError, match="split file not found"):
        calibration_dataset(data)


def test_calibration_splits_of_voc_and_coco(tmp_path):
    voc = make_voc(tmp_path / "voc")
    write_lines(voc / "ImageSets" / "Segmentation" / "few.txt", [VOC_TRAIN[0]])
    images = calibration_dataset(DataConfig(format="voc", root=voc, calibration_split="few"))
    assert images.ids == [VOC_TRAIN[0]] and images[0]["mask"].shape == (16, 16)
    coco = make_coco(tmp_path / "coco", split="train2014")
    write_lines(coco / "few.txt", ["COCO_val2014_000000000042"])  # COCO: image ids are the file stems
    data = DataConfig(format="coco", root=coco, train_split="train2014", calibration_split="few")
    images = calibration_dataset(data)
    assert images.ids == ["COCO_val2014_000000000042"] and (images[0]["mask"] == 255).any()  # the crowd


def test_the_untagged_warning_is_given_once_per_dataset(tmp_path, caplog):
    data = DataConfig(format="folder", root=make_folder(tmp_path / "once"))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # what the stages of one run do
            build_dataset(data, "all", for_training=True)
    assert sum("have no tag" in r.getMessage() for r in caplog.records) == 1
    other = DataConfig(format="folder", root=make_folder(tmp_path / "other"))
    with caplog.at_level(logging.WARNING):
        build_dataset(other, "all", for_training=True)  # another dataset: its own warning
    assert sum("have no tag" in r.getMessage() for r in caplog.records) == 2


def drawn_folder(root):
    """10 tagged images, no split files: m1-m4 cat and m5-m6 dog with masks, p1-p4 cat without."""
    from rpnet.io import save_mask

    names = [f"m{i}" for i in range(1, 7)] + [f"p{i}" for i in range(1, 5)]
    for name in names:
        save_image(root / "images" / f"{name}.png", np.zeros((4, 4, 3), np.uint8))
    for name in names[:6]:
        save_mask(root / "masks" / f"{name}.png", np.zeros((4, 4), np.uint8))
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    (root / "tags.csv").write_text("image,tags\n" + "".join(
        f"{n}.png,{'dog' if n in ('m5', 'm6') else 'cat'}\n" for n in names))
    return root


def test_val_fraction_holds_out_a_stratified_share_of_the_images_with_masks(tmp_path, caplog):
    from rpnet.pipeline.fingerprint import data_files

    root = drawn_folder(tmp_path / "photos")
    data = DataConfig(format="folder", root=root, val_fraction=0.5)
    with caplog.at_level(logging.WARNING):
        val = {r.id for r in build_dataset(data, "val").records}
        train = {r.id for r in build_dataset(data, "train").records}
    # targets: dog max(1, round(0.5 x 2)) = 1 of m5, m6; cat round(0.5 x 4) = 2 of m1-m4; never p1-p4
    assert len(val) == 3 and len(val & {"m5", "m6"}) == 1 and len(val & {"m1", "m2", "m3", "m4"}) == 2
    assert val.isdisjoint(train) and val | train == {f"m{i}" for i in range(1, 7)} | {f"p{i}" for i in range(1, 5)}
    messages = [r.getMessage() for r in caplog.records]
    assert any("data.val_fraction 0.5: 3 of the 6 tagged images with masks are split 'val'" in m for m in messages)
    assert not any("including any you evaluate on" in m for m in messages)
    assert {r.id for r in build_dataset(data, "val").records} == val  # seeded: the same draw every time
    (root / "fewmasks.txt").write_text("m5.png\n")  # a calibration image stays in training
    calibrated = DataConfig(format="folder", root=root, val_fraction=0.5, calibration_split="fewmasks")
    assert {r.id for r in build_dataset(calibrated, "val").records} & {"m5", "m6"} == {"m6"}
    before = data_files(data)
    from rpnet.io import save_mask
    save_mask(root / "masks" / "p1.png", np.zeros((4, 4), np.uint8))  # another mask: another draw, another input
    assert data_files(data) != before
    (root / "val.txt").write_text("p2.png\n")  # a split file: no draw
    assert {r.id for r in build_dataset(data, "val").records} == {"p2"}
    assert len(build_dataset(DataConfig(format="folder", root=root), "train").records) == 10
