import numpy as np
import pytest
import scipy.io

from rpnet.data.dataset import TaggedImages
from rpnet.data.voc import VOC_CLASSES, load_voc, train_aug_ids, voc_mask_loader
from rpnet.errors import DataError

from .fixtures import (
    AUG_MASKS,
    SBD_MASKS,
    SBD_TAGS,
    TRAIN_AUG_BY_HAND,
    VOC_MASKS,
    VOC_TAGS,
    make_sbd,
    make_voc,
    write_lines,
    write_voc_xml,
)


def test_voc_classes_are_background_plus_twenty():
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person"


def test_train_split_records(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    records, names = load_voc(root, "train")
    assert names == list(VOC_CLASSES)
    assert [r.id for r in records] == ["a1", "a2", "a3"]
    for r in records:
        assert r.tags == VOC_TAGS[r.id]  # a3's difficult bottle is a tag; <part> names are not
        assert r.image == root / "JPEGImages" / f"{r.id}.jpg"
        assert r.mask == root / "SegmentationClass" / f"{r.id}.png"


def test_masks_read_back_equal_to_written(tmp_path):
    records, names = load_voc(make_voc(tmp_path / "VOC2012"), "val")
    ds = TaggedImages(records, names)
    for i, image_id in enumerate(["v1", "v2"]):
        np.testing.assert_array_equal(ds[i]["mask"], VOC_MASKS[image_id])


def test_tags_from_mask_without_xml(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    (root / "Annotations" / "a1.xml").unlink()
    records, _ = load_voc(root, "train")
    # a1's mask holds dog (12), person (15), 0 and 255 -> tags 11 and 14
    assert records[0].tags == (11, 14)


def test_class_list_file_and_root_classes_txt(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    write_lines(root / "ImageSets" / "Segmentation" / "small.txt", ["a2"])
    write_lines(tmp_path / "mine.txt", ["background", "dog", "cat"])
    records, names = load_voc(root, "small", classes=tmp_path / "mine.txt")
    assert names == ["background", "dog", "cat"] and records[0].tags == (1,)
    write_lines(root / "classes.txt", ["background", "cat"])
    records, names = load_voc(root, "small")
    assert names == ["background", "cat"] and records[0].tags == (0,)


def test_tag_not_in_class_list_names_the_xml(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    write_voc_xml(root / "Annotations" / "a2.xml", ["cat", "unicorn"])
    with pytest.raises(DataError, match=r"a2\.xml.*unicorn"):
        load_voc(root, "train")


def test_malformed_xml_names_the_file(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    (root / "Annotations" / "a3.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"a3\.xml"):
        load_voc(root, "train")


def test_id_without_image_names_the_split_file(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    (root / "JPEGImages" / "a2.jpg").unlink()
    with pytest.raises(DataError, match=r"train\.txt.*'a2'.*a2\.jpg"):
        load_voc(root, "train")


def test_missing_split_file_lists_the_splits(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    with pytest.raises(DataError, match=r"trainval\.txt.*\['train', 'val'\]"):
        load_voc(root, "trainval")


def test_split_entry_cannot_leave_the_root(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    write_lines(root / "ImageSets" / "Segmentation" / "evil.txt", ["../../outside"])
    with pytest.raises(DataError, match=r"\.\./\.\./outside"):
        load_voc(root, "evil")


def test_train_aug_ids_counted_by_hand(tmp_path):
    root, sbd = make_voc(tmp_path / "VOC2012"), make_sbd(tmp_path / "sbd")
    assert train_aug_ids(root, sbd) == TRAIN_AUG_BY_HAND


def test_train_aug_records_images_masks_and_tags(tmp_path):
    root, sbd = make_voc(tmp_path / "VOC2012"), make_sbd(tmp_path / "sbd")
    records, names = load_voc(root, "train_aug", sbd_root=sbd)
    by_id = {r.id: r for r in records}
    assert list(by_id) == TRAIN_AUG_BY_HAND
    assert by_id["s2"].image == sbd / "img" / "s2.jpg"  # not in JPEGImages
    assert by_id["s1"].image == root / "JPEGImages" / "s1.jpg"
    assert by_id["a1"].mask.parent.name == "SegmentationClass"
    assert by_id["s1"].mask.parent.name == "SegmentationClassAug"  # preferred to the .mat
    assert by_id["s3"].mask == sbd / "cls" / "s3.mat"
    assert by_id["s1"].tags == VOC_TAGS["s1"]
    assert by_id["s2"].tags == SBD_TAGS["s2"] and by_id["s3"].tags == SBD_TAGS["s3"]  # from the .mat
    ds = TaggedImages(records, names, mask_loader=voc_mask_loader)
    masks = {ds[i]["id"]: ds[i]["mask"] for i in range(len(ds))}
    np.testing.assert_array_equal(masks["a1"], VOC_MASKS["a1"])
    np.testing.assert_array_equal(masks["s1"], AUG_MASKS["s1"])
    np.testing.assert_array_equal(masks["s2"], SBD_MASKS["s2"])
    np.testing.assert_array_equal(masks["s3"], SBD_MASKS["s3"])


def test_train_aug_without_sbd_root_is_a_clear_error(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    with pytest.raises(DataError, match="sbd_root"):
        load_voc(root, "train_aug")


def test_train_aug_list_file_is_used_without_sbd(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    write_lines(root / "ImageSets" / "Segmentation" / "train_aug.txt", ["a3", "s1"])
    records, _ = load_voc(root, "train_aug")
    assert [r.id for r in records] == ["a3", "s1"]
    assert records[1].mask == root / "SegmentationClassAug" / "s1.png"


def test_sbd_mat_without_segmentation_names_the_file(tmp_path):
    root, sbd = make_voc(tmp_path / "VOC2012"), make_sbd(tmp_path / "sbd")
    scipy.io.savemat(str(sbd / "cls" / "s3.mat"), {"GTinst": {"Segmentation": np.zeros((16, 16))}})
    with pytest.raises(DataError, match=r"s3\.mat.*GTcls"):
        load_voc(root, "train_aug", sbd_root=sbd)  # s3 has no XML: its tags come from the .mat


def test_train_aug_missing_sbd_list_names_it(tmp_path):
    root, sbd = make_voc(tmp_path / "VOC2012"), make_sbd(tmp_path / "sbd")
    (sbd / "val.txt").unlink()
    with pytest.raises(DataError, match=r"sbd/val\.txt"):
        load_voc(root, "train_aug", sbd_root=sbd)


def test_a_split_file_that_is_not_utf8_is_named(tmp_path):
    from rpnet.data.voc import read_split

    (tmp_path / "train.txt").write_bytes("caf\xe9_1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train.txt: not UTF-8 text .* save it as UTF-8"):
        read_split(tmp_path / "train.txt")
    (tmp_path / "bom.txt").write_bytes("\ufeffa1\na2\n".encode("utf-8"))
    assert read_split(tmp_path / "bom.txt") == ["a1", "a2"]
