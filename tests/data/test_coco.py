import json
import pickle

import numpy as np
import pytest

from rpnet.data.coco import instance_mask, load_coco
from rpnet.data.dataset import TaggedImages
from rpnet.errors import DataError

from .fixtures import COCO_CLASS_NAMES, COCO_FILES, SIZE, coco_instances, make_coco, write_lines

PERSON, DOG, TOOTHBRUSH = 1, 2, 3  # labels after mapping category ids 1, 18, 90


def test_categories_map_to_contiguous_labels_in_id_order(tmp_path):
    records, names, _ = load_coco(make_coco(tmp_path), "val2014")
    assert names == COCO_CLASS_NAMES
    # Sorted by COCO image id (7 before 42); ids are file stems.
    assert [r.id for r in records] == ["COCO_val2014_000000000007", "COCO_val2014_000000000042"]
    assert records[1].image == tmp_path / "val2014" / COCO_FILES[42]
    assert records[0].tags == ()  # image 7 has no annotations
    assert records[1].tags == (PERSON - 1, DOG - 1, TOOTHBRUSH - 1)  # the crowd still tags person


def test_semantic_mask_rule(tmp_path):
    records, names, masks = load_coco(make_coco(tmp_path), "val2014")
    ds = TaggedImages(records, names, mask_loader=masks)
    empty, mask = ds[0]["mask"], ds[1]["mask"]
    assert (empty == 0).all()
    _, toothbrush, crowd = coco_instances()
    # The small RLE toothbrush, listed before the dog, stays on top of it.
    assert (mask[toothbrush == 1] == TOOTHBRUSH).all()
    # Inside the dog polygon (x, y in [0, 12]), away from its edges and the toothbrush.
    assert (mask[7:10, 7:11] == DOG).all() and (mask[1, 8:11] == DOG).all()
    # The crowd is ignore, except where the dog instance lies on it (rows 10, 11; x < 12).
    assert (mask[13:16, :] == 255).all() and (mask[10:12, 13:16] == 255).all()
    assert (mask[10:12, 1:11] == DOG).all()
    # Background right of the dog, above the crowd.
    assert (mask[0:10, 13:16] == 0).all()
    assert set(np.unique(mask)) == {0, DOG, TOOTHBRUSH, 255}


def test_instance_mask_decodes_each_segmentation_kind():
    anns, toothbrush, crowd = coco_instances()
    np.testing.assert_array_equal(instance_mask(anns[0]["segmentation"], SIZE, SIZE), toothbrush)
    np.testing.assert_array_equal(instance_mask(anns[2]["segmentation"], SIZE, SIZE), crowd)
    dog = instance_mask(anns[1]["segmentation"], SIZE, SIZE)
    assert 120 <= dog.sum() <= 170 and dog[6, 6] == 1 and dog[14, 14] == 0
    # A degenerate polygon (two points) is empty, not misread as a box.
    assert instance_mask([[1, 1, 5, 5]], SIZE, SIZE).sum() == 0


def test_mask_loader_pickles(tmp_path):
    records, names, masks = load_coco(make_coco(tmp_path), "val2014")
    again = pickle.loads(pickle.dumps(masks))
    np.testing.assert_array_equal(again(records[1]), masks(records[1]))


def test_class_list_file_orders_by_name(tmp_path):
    write_lines(tmp_path / "classes.txt", ["background", "toothbrush", "dog", "person", "cat"])
    records, names, _ = load_coco(make_coco(tmp_path / "coco"), "val2014", classes=tmp_path / "classes.txt")
    assert names == ["background", "toothbrush", "dog", "person", "cat"]
    assert records[1].tags == (0, 1, 2)


def test_category_missing_from_class_list_names_the_json(tmp_path):
    write_lines(tmp_path / "classes.txt", ["background", "dog", "person"])
    with pytest.raises(DataError, match=r"instances_val2014\.json.*toothbrush"):
        load_coco(make_coco(tmp_path / "coco"), "val2014", classes=tmp_path / "classes.txt")


def test_annotation_with_unknown_category_names_the_json(tmp_path):
    bad = {"id": 9, "image_id": 7, "category_id": 5, "segmentation": [[0, 0, 4, 0, 4, 4]], "area": 8.0,
           "bbox": [0, 0, 4, 4], "iscrowd": 0}
    with pytest.raises(DataError, match=r"instances_val2014\.json.*category 5"):
        load_coco(make_coco(tmp_path, extra_annotations=[bad]), "val2014")


def test_missing_annotation_file_names_it(tmp_path):
    root = make_coco(tmp_path)
    with pytest.raises(DataError, match=r"instances_train2014\.json.*instances_val2014\.json"):
        load_coco(root, "train2014")


def test_missing_image_names_the_file(tmp_path):
    root = make_coco(tmp_path)
    (root / "val2014" / COCO_FILES[7]).unlink()
    with pytest.raises(DataError, match=COCO_FILES[7]):
        load_coco(root, "val2014")


def test_file_name_leaving_the_folder_is_refused(tmp_path):
    root = make_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2014.json"
    content = json.loads(path.read_text())
    content["images"][0]["file_name"] = "../../elsewhere.jpg"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"\.\./\.\./elsewhere\.jpg"):
        load_coco(root, "val2014")


def test_unreadable_json_names_the_file(tmp_path):
    root = make_coco(tmp_path)
    (root / "annotations" / "instances_val2014.json").write_text("{not json")
    with pytest.raises(DataError, match=r"instances_val2014\.json"):
        load_coco(root, "val2014")
