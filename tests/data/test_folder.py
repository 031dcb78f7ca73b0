import json
import os

import numpy as np
import pytest

from rpnet.data.dataset import TaggedImages
from rpnet.data.folder import load_folder
from rpnet.errors import DataError
from rpnet.io import save_image

from .fixtures import FOLDER_CLASSES, block_mask, make_folder, solid_image, write_lines

CAT, DOG, PERSON = 0, 1, 2  # foreground tags of FOLDER_CLASSES


@pytest.mark.parametrize("tags_format", ["csv", "json"])
def test_all_images_without_split_file(tmp_path, tags_format):
    root = make_folder(tmp_path, tags_format)
    records, names = load_folder(root, "val")  # no val.txt: every image
    assert names == FOLDER_CLASSES
    assert [r.id for r in records] == ["a", "b", "c", "d"]
    assert [r.image.name for r in records] == ["a.jpg", "b.png", "c.jpeg", "d.png"]
    assert [r.tags for r in records] == [(DOG, PERSON), (CAT, DOG), (), ()]
    assert records[0].mask == root / "masks" / "a.png"
    assert all(r.mask is None for r in records[1:])


def test_split_file_lists_names_or_stems(tmp_path):
    records, _ = load_folder(make_folder(tmp_path), "train")
    assert [r.id for r in records] == ["a", "d"]


def test_masks_read_back_and_images_load(tmp_path):
    records, names = load_folder(make_folder(tmp_path), "all")
    ds = TaggedImages(records, names)
    np.testing.assert_array_equal(ds[0]["mask"], block_mask(2, extra={3: (slice(0, 2), slice(0, 2))}))
    assert (ds[1]["mask"] == 255).all()  # b has no mask file
    assert abs(int(ds[1]["image"].mean()) - 20) <= 1  # b.png is the grey level 20


def test_class_file_from_config_overrides_root(tmp_path):
    root = make_folder(tmp_path / "data")
    write_lines(tmp_path / "other.txt", ["background", "person", "dog", "cat"])
    records, names = load_folder(root, "all", classes=tmp_path / "other.txt")
    assert names == ["background", "person", "dog", "cat"]
    assert records[0].tags == (0, 1)  # dog person under the new order


def test_duplicate_stems_are_an_error(tmp_path):
    root = make_folder(tmp_path)
    save_image(root / "images" / "a.png", solid_image(5))
    with pytest.raises(DataError, match=r"'a'.*a\.jpg.*a\.png|'a'.*a\.png.*a\.jpg"):
        load_folder(root, "all")


def test_tag_not_in_class_list_names_the_tags_file(tmp_path):
    root = make_folder(tmp_path)
    write_lines(root / "tags.csv", ["image,tags", "a.jpg,dog zebra"])
    with pytest.raises(DataError, match=r"tags\.csv.*a\.jpg.*zebra"):
        load_folder(root, "all")


def test_tags_separated_by_commas_are_all_read_and_checked(tmp_path):
    root = make_folder(tmp_path)
    write_lines(root / "tags.csv", ["image,tags", "a.jpg,cat,person", "b.png,dog"])
    records, _ = load_folder(root, "all")
    assert [r.tags for r in records if r.id in "ab"] == [(CAT, PERSON), (DOG,)]
    write_lines(root / "tags.csv", ["image,tags", "a.jpg,cat,person,zebra"])  # the third tag was dropped before
    with pytest.raises(DataError, match=r"a\.jpg.*zebra"):
        load_folder(root, "all")
    write_lines(root / "tags.csv", ["tags,image", "cat,person,a.jpg"])
    with pytest.raises(DataError, match="line 2 has 3 cells for 2 columns"):
        load_folder(root, "all")


@pytest.mark.parametrize("entry", ["../outside.jpg", "/tmp/elsewhere.jpg"])
def test_tags_path_leaving_the_folder_is_refused(tmp_path, entry):
    root = make_folder(tmp_path / "data")
    save_image(tmp_path / "outside.jpg", solid_image(1))
    write_lines(root / "tags.csv", ["image,tags", f"{entry},dog"])
    with pytest.raises(DataError, match=entry.replace(".", r"\.")):
        load_folder(root, "all")


def test_symlinked_image_outside_the_folder_is_refused(tmp_path):
    root = make_folder(tmp_path / "data")
    save_image(tmp_path / "outside.png", solid_image(1))
    os.symlink(tmp_path / "outside.png", root / "images" / "e.png")
    with pytest.raises(DataError, match="e.png"):
        load_folder(root, "all")


def test_tags_entry_without_image_names_the_file(tmp_path):
    root = make_folder(tmp_path)
    (root / "tags.json").unlink(missing_ok=True)
    (root / "tags.csv").unlink()
    (root / "tags.json").write_text(json.dumps({"zz.jpg": ["dog"]}))
    with pytest.raises(DataError, match=r"tags\.json.*zz\.jpg"):
        load_folder(root, "all")


def test_split_entry_without_image_names_the_split_file(tmp_path):
    root = make_folder(tmp_path)
    write_lines(root / "train.txt", ["a.jpg", "missing.jpg"])
    with pytest.raises(DataError, match=r"train\.txt.*missing\.jpg"):
        load_folder(root, "train")


def test_image_listed_twice_is_an_error(tmp_path):
    root = make_folder(tmp_path)
    write_lines(root / "tags.csv", ["image,tags", "a.jpg,dog", "a,cat"])
    with pytest.raises(DataError, match=r"tags\.csv.*twice"):
        load_folder(root, "all")


def test_tags_file_problems(tmp_path):
    root = make_folder(tmp_path)
    write_lines(root / "tags.csv", ["file,labels", "a.jpg,dog"])
    with pytest.raises(DataError, match=r"tags\.csv.*header"):
        load_folder(root, "all")
    (root / "tags.json").write_text("{}")
    with pytest.raises(DataError, match=r"tags\.csv.*tags\.json"):
        load_folder(root, "all")
    (root / "tags.csv").unlink()
    (root / "tags.json").unlink()
    with pytest.raises(DataError, match=r"tags\.csv"):
        load_folder(root, "all")


def test_missing_class_list_and_image_folder(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"classes\.txt"):
        load_folder(root, "all")
    with pytest.raises(DataError, match="images"):
        load_folder(tmp_path / "empty", "all")


def test_a_byte_order_mark_from_excel_or_notepad_is_accepted(tmp_path):
    root = make_folder(tmp_path)
    (root / "tags.csv").write_bytes("\ufeffimage,tags\na.jpg,dog\n".encode("utf-8"))
    (root / "classes.txt").write_bytes(("\ufeff" + "\n".join(FOLDER_CLASSES) + "\n").encode("utf-8"))
    records, classes = load_folder(root, "all")
    assert classes == FOLDER_CLASSES and next(r for r in records if r.id == "a").tags == (DOG,)


def test_every_problem_of_a_tags_file_is_named_at_once(tmp_path):
    root = make_folder(tmp_path)
    write_lines(root / "tags.csv", ["image,tags", "a.jpg,Dog", "b.png,cat", "b.png,dog", "nowhere.jpg,cat", "c.jpeg,persn"])
    with pytest.raises(DataError) as caught:
        load_folder(root, "all")
    message = str(caught.value)
    assert message.startswith("4 problems in") and "tags.csv" in message
    assert "'a.jpg' has tags ['Dog'] not in the class list" in message and "did you mean 'dog' for 'Dog'" in message
    assert "'b.png' is listed twice" in message and "'nowhere.jpg' is not an image" in message
    assert "did you mean 'person' for 'persn'" in message
