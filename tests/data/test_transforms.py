import numpy as np
import pytest
import torch

from rpnet.data.transforms import (
    Compose,
    Normalize,
    RandomCrop,
    RandomHFlip,
    RandomResizeLong,
    RandomScale,
    ToTensor,
    collate,
    eval_transform,
    seg_train_transform,
    train_transform,
)


def make_sample(height: int, width: int, seed: int = 0, with_mask: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    sample = {
        "image": rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8),
        "tags": np.array([0, 1, 0], dtype=np.float32),
        "id": f"img{seed}",
        "index": seed,
    }
    if with_mask:
        sample["mask"] = rng.choice(np.array([0, 3, 7, 255], dtype=np.uint8), size=(height, width))
    return sample


def gen(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_flip_mirrors_image_and_mask_by_hand():
    image = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]],
                      [[10, 11, 12], [13, 14, 15], [16, 17, 18]]], dtype=np.uint8)  # (2, 3, 3)
    mask = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    sample = {"image": image, "mask": mask, "tags": np.zeros(2, np.float32), "id": "a", "index": 0}
    out = RandomHFlip(p=1.0)(sample, gen())
    assert out["mask"].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert out["image"][0].tolist() == [[7, 8, 9], [4, 5, 6], [1, 2, 3]]
    assert out["image"][1].tolist() == [[16, 17, 18], [13, 14, 15], [10, 11, 12]]
    assert mask.tolist() == [[0, 1, 2], [3, 4, 5]], "the input is left untouched"
    kept = RandomHFlip(p=0.0)(sample, gen())
    assert np.array_equal(kept["image"], image) and np.array_equal(kept["mask"], mask)


def test_flip_happens_about_half_the_time():
    sample = {"image": np.array([[[0] * 3, [9] * 3]], dtype=np.uint8), "tags": np.zeros(1, np.float32)}
    rng = gen(3)
    flips = [RandomHFlip()(sample, rng)["image"][0, 0, 0] == 9 for _ in range(400)]
    assert 0.4 < np.mean(flips) < 0.6  # binomial sd 0.025


def test_crop_pads_a_smaller_image_with_zero_and_the_mask_with_ignore():
    sample = {"image": np.full((2, 3, 3), 7.0, dtype=np.float32), "mask": np.ones((2, 3), np.uint8),
              "tags": np.zeros(1, np.float32)}
    offsets = set()
    for seed in range(20):
        out = RandomCrop(4)(sample, gen(seed))
        assert out["image"].shape == (4, 4, 3) and out["mask"].shape == (4, 4)
        assert out["image"].dtype == np.float32 and out["mask"].dtype == np.uint8
        assert (out["mask"] == 1).sum() == 6 and (out["mask"] == 255).sum() == 10
        ys, xs = np.nonzero(out["mask"] == 1)
        assert ys.max() - ys.min() == 1 and xs.max() - xs.min() == 2, "the image stays one 2x3 block"
        image_kept = (out["image"] == 7.0).all(axis=-1)
        assert np.array_equal(image_kept, out["mask"] == 1)
        assert (out["image"][~image_kept] == 0.0).all()
        offsets.add((ys.min(), xs.min()))
    assert len(offsets) > 1, "the image lands at random positions in the padded crop"


def test_crop_of_a_larger_image_is_a_window_of_it():
    height, width = 6, 5
    labels = np.arange(height * width, dtype=np.uint8).reshape(height, width)
    sample = {"image": np.repeat(labels[..., None], 3, axis=-1), "mask": labels, "tags": np.zeros(1, np.float32)}
    for seed in range(10):
        out = RandomCrop(4)(sample, gen(seed))
        top, left = divmod(int(out["mask"][0, 0]), width)
        assert np.array_equal(out["mask"], labels[top:top + 4, left:left + 4])
        assert np.array_equal(out["image"][..., 0], out["mask"])


def test_crop_cuts_one_axis_and_pads_the_other():
    sample = {"image": np.ones((6, 2, 3), np.uint8), "mask": np.ones((6, 2), np.uint8),
              "tags": np.zeros(1, np.float32)}
    out = RandomCrop(4, ignore_index=99)(sample, gen(1))
    assert (out["mask"] == 1).sum() == 8 and (out["mask"] == 99).sum() == 8
    assert ((out["mask"] == 1).sum(axis=1) == 2).all(), "every row keeps its 2 image columns"


def test_normalize_a_known_pixel():
    sample = {"image": np.array([[[255, 0, 128]]], dtype=np.uint8), "tags": np.zeros(1, np.float32)}
    out = Normalize()(sample, gen())
    # (1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225
    expected = [2.2489083, -2.0357143, 0.4264924]
    assert out["image"].dtype == np.float32
    np.testing.assert_allclose(out["image"][0, 0], expected, rtol=1e-5)


def test_normalize_refuses_an_image_normalised_twice():
    sample = {"image": np.zeros((2, 2, 3), np.float32), "tags": np.zeros(1, np.float32)}
    with pytest.raises(ValueError, match="uint8"):
        Normalize()(sample, gen())


def test_resize_long_side_lands_in_range_and_keeps_mask_labels():
    sample = make_sample(30, 20)
    lengths = set()
    for seed in range(15):
        out = RandomResizeLong(12, 18)(sample, gen(seed))
        height, width = out["image"].shape[:2]
        assert 12 <= height <= 18, "the long side is the height"
        assert abs(width - height * 20 / 30) <= 0.5, "aspect ratio kept to rounding"
        assert out["mask"].shape == (height, width) and out["image"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= {0, 3, 7, 255}, "nearest: no new labels"
        lengths.add(height)
    assert len(lengths) > 1


def test_resize_to_a_fixed_long_side_by_hand():
    sample = {"image": np.full((30, 20, 3), 100, np.uint8), "mask": np.full((30, 20), 3, np.uint8),
              "tags": np.zeros(1, np.float32)}
    out = RandomResizeLong(15, 15)(sample, gen())
    assert out["image"].shape == (15, 10, 3) and out["mask"].shape == (15, 10)
    assert (out["image"] == 100).all() and (out["mask"] == 3).all()
    scaled = RandomScale(0.5, 0.5)(sample, gen())
    assert scaled["image"].shape == (15, 10, 3)


def test_resize_of_a_float_image_keeps_values_and_dtype():
    sample = {"image": np.full((8, 4, 3), -0.5, np.float32), "tags": np.zeros(1, np.float32)}
    out = RandomResizeLong(16, 16)(sample, gen())
    assert out["image"].shape == (16, 8, 3) and out["image"].dtype == np.float32
    np.testing.assert_allclose(out["image"], -0.5, atol=1e-6)


def test_to_tensor_layout_and_dtypes():
    sample = make_sample(4, 5)
    out = ToTensor()(sample, gen())
    assert out["image"].shape == (3, 4, 5) and out["image"].dtype == torch.float32
    assert out["image"][2, 1, 3].item() == float(sample["image"][1, 3, 2])
    assert out["mask"].dtype == torch.int64 and out["mask"][0, 0].item() == int(sample["mask"][0, 0])
    assert out["tags"].dtype == torch.float32 and out["tags"].tolist() == [0.0, 1.0, 0.0]
    assert out["id"] == "img0" and out["index"] == 0


def test_train_transform_shapes_and_same_seed_same_output():
    sample = make_sample(20, 14, seed=2)
    transform = train_transform(crop_size=12, resize_long=(10, 24))
    a, b = transform(sample, gen(5)), transform(sample, gen(5))
    assert a["image"].shape == (3, 12, 12) and a["mask"].shape == (12, 12)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    others = [transform(sample, gen(seed))["image"] for seed in range(6, 10)]
    assert any(not torch.equal(a["image"], o) for o in others)
    assert a["id"] == "img2" and a["index"] == 2


def test_seg_train_transform_shapes():
    sample = make_sample(12, 10)
    sample["mask"] = np.ones((12, 10), np.uint8)
    # scaled by at most 1.5 the width is at most 15 < 16, so every crop has padding
    out = seg_train_transform(crop_size=16, scale_range=(0.5, 1.5))(sample, gen(1))
    assert out["image"].shape == (3, 16, 16) and out["mask"].shape == (16, 16)
    assert (out["mask"] == 255).any() and (out["mask"] == 1).any()
    assert set(out["mask"].unique().tolist()) == {1, 255}


def test_eval_transform_has_no_geometry():
    sample = make_sample(7, 9, with_mask=False)
    out = eval_transform()(sample, gen())
    assert out["image"].shape == (3, 7, 9) and "mask" not in out
    expected = (sample["image"][3, 4, 0] / 255 - 0.485) / 0.229
    assert out["image"][0, 3, 4].item() == pytest.approx(expected, rel=1e-5)


def test_compose_applies_in_order():
    calls = []

    def record(name):
        def step(sample, rng):
            calls.append(name)
            return sample
        return step

    Compose([record("a"), record("b")])({"x": 1}, gen())
    assert calls == ["a", "b"]


def test_collate_stacks_tensors_and_keeps_ids():
    transform = train_transform(crop_size=8, resize_long=(8, 12))
    samples = [transform(make_sample(10, 10, seed=s), gen(s)) for s in (5, 9)]
    batch = collate(samples)
    assert batch["image"].shape == (2, 3, 8, 8) and batch["mask"].shape == (2, 8, 8)
    assert batch["mask"].dtype == torch.int64
    assert batch["tags"].shape == (2, 3)
    assert batch["id"] == ["img5", "img9"]
    assert batch["index"].tolist() == [5, 9]
    assert torch.equal(batch["image"][1], samples[1]["image"])


def test_collate_rejects_mixed_keys_and_sizes():
    with_mask = ToTensor()(make_sample(4, 4), gen())
    without = ToTensor()(make_sample(4, 4, with_mask=False), gen())
    with pytest.raises(ValueError, match="keys"):
        collate([with_mask, without])
    other_size = ToTensor()(make_sample(5, 4), gen())
    with pytest.raises(ValueError, match="image"):
        collate([with_mask, other_size])
