import logging
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from rpnet.data.dataset import ImageRecord, TaggedImages, drop_untagged
from rpnet.errors import DataError
from rpnet.io import save_image, save_mask

from .fixtures import SIZE, block_mask, solid_image

NAMES = ["background", "cat", "dog", "person"]


def _records(tmp_path: Path, tags: list[tuple[int, ...]], masks: bool = False) -> list[ImageRecord]:
    records = []
    for i, t in enumerate(tags):
        image = save_image(tmp_path / f"im{i}.png", solid_image(10 * i))
        mask = save_mask(tmp_path / f"im{i}_mask.png", block_mask(i % 4)) if masks else None
        records.append(ImageRecord(id=f"im{i}", image=image, tags=t, mask=mask))
    return records


def draw_two(sample, rng):
    """A transform that exposes the generator it was given."""
    return {"id": sample["id"], "draw": rng.integers(0, 2**31, size=2)}


def test_sample_contents_without_masks(tmp_path):
    ds = TaggedImages(_records(tmp_path, [(0, 2), (1,)]), NAMES)
    sample = ds[0]
    assert set(sample) == {"image", "tags", "id", "index"}
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (SIZE, SIZE, 3)
    assert sample["tags"].dtype == np.float32
    np.testing.assert_array_equal(sample["tags"], [1, 0, 1])
    assert sample["id"] == "im0" and sample["index"] == 0
    assert ds[-1]["id"] == "im1" and ds[-1]["index"] == 1
    assert not ds.has_masks and ds.num_classes == 3 and ds.class_names == tuple(NAMES)
    assert ds.ids == ["im0", "im1"] and len(ds) == 2
    with pytest.raises(IndexError):
        ds[2]


def test_masks_read_back_and_missing_ones_are_ignore(tmp_path):
    records = _records(tmp_path, [(0,), (1,), (2,)], masks=True)
    records[2] = ImageRecord(id="im2", image=records[2].image, tags=(2,), mask=None)
    ds = TaggedImages(records, NAMES)
    assert ds.has_masks
    np.testing.assert_array_equal(ds[1]["mask"], block_mask(1))
    assert ds[1]["mask"].dtype == np.uint8
    assert (ds[2]["mask"] == 255).all() and ds[2]["mask"].shape == (SIZE, SIZE)


def test_mask_loader_replaces_files(tmp_path):
    calls = []

    def loader(record):
        calls.append(record.id)
        return np.full((SIZE, SIZE), 3, dtype=np.uint8)

    ds = TaggedImages(_records(tmp_path, [(2,)]), NAMES, mask_loader=loader)
    assert ds.has_masks
    assert (ds[0]["mask"] == 3).all() and calls == ["im0"]


def test_bad_masks_name_the_file(tmp_path):
    records = _records(tmp_path, [(0,)])
    save_mask(tmp_path / "small.png", np.zeros((4, 4), dtype=np.uint8))
    wrong_size = TaggedImages([ImageRecord("im0", records[0].image, (0,), tmp_path / "small.png")], NAMES)
    with pytest.raises(DataError, match="small.png"):
        wrong_size[0]
    save_mask(tmp_path / "label9.png", np.full((SIZE, SIZE), 9, dtype=np.uint8))
    unknown_label = TaggedImages([ImageRecord("im0", records[0].image, (0,), tmp_path / "label9.png")], NAMES)
    with pytest.raises(DataError, match="label9.png.*label 9"):
        unknown_label[0]
    gone = TaggedImages([ImageRecord("im0", records[0].image, (0,), tmp_path / "gone.png")], NAMES)
    with pytest.raises(DataError, match="gone.png"):
        gone[0]


def test_missing_image_names_the_file(tmp_path):
    ds = TaggedImages([ImageRecord("x", tmp_path / "x.jpg", (0,))], NAMES)
    with pytest.raises(DataError, match="x.jpg"):
        ds[0]


def test_tag_outside_class_range_is_refused(tmp_path):
    with pytest.raises(DataError, match="im0.*3"):
        TaggedImages(_records(tmp_path, [(3,)]), NAMES)  # 3 foreground classes: tags 0..2


def test_transform_gets_generator_seeded_by_seed_epoch_index(tmp_path):
    ds = TaggedImages(_records(tmp_path, [(0,), (1,), (2,)]), NAMES, transform=draw_two, seed=5)
    ds.set_epoch(2)
    expected = np.random.default_rng([5, 2, 1]).integers(0, 2**31, size=2)
    np.testing.assert_array_equal(ds[1]["draw"], expected)
    np.testing.assert_array_equal(ds[1]["draw"], ds[1]["draw"])  # the same call, the same draw
    assert not np.array_equal(ds[1]["draw"], ds[2]["draw"])
    ds.set_epoch(3)
    assert not np.array_equal(ds[1]["draw"], expected)


def test_augmentation_does_not_depend_on_worker_count(tmp_path):
    ds = TaggedImages(_records(tmp_path, [(0,), (1,), (2,), (0, 1)]), NAMES, transform=draw_two, seed=1)
    ds.set_epoch(4)

    def draws(workers):
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        return {s["id"]: tuple(int(v) for v in s["draw"]) for s in loader}

    assert draws(0) == draws(2)


def test_tag_matrix_and_subset(tmp_path):
    records = _records(tmp_path, [(0, 2), (), (1,)], masks=True)
    ds = TaggedImages(records, NAMES, seed=3)
    np.testing.assert_array_equal(ds.tag_matrix(), [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    assert ds.tag_matrix().dtype == bool
    ds.set_epoch(7)
    sub = ds.subset(np.array([2, 0]))
    assert sub.ids == ["im2", "im0"]
    assert sub.has_masks and sub.class_names == ds.class_names and sub.epoch == 7 and sub.seed == 3
    assert sub[0]["index"] == 0 and sub[0]["id"] == "im2"


def test_drop_untagged_reports_and_leaves_out(tmp_path, caplog):
    ds = TaggedImages(_records(tmp_path, [(0,), (), (1,), ()]), NAMES)
    with caplog.at_level(logging.WARNING, logger="rpnet.data.dataset"):
        kept = drop_untagged(ds)
    assert kept.ids == ["im0", "im2"]
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "2 of 4 images" in message and "im1" in message and "im3" in message


def test_drop_untagged_is_silent_when_all_tagged(tmp_path, caplog):
    ds = TaggedImages(_records(tmp_path, [(0,), (1,)]), NAMES)
    with caplog.at_level(logging.WARNING):
        assert drop_untagged(ds).ids == ds.ids
    assert not caplog.records
