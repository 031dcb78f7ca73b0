import numpy as np
import pytest

from rpnet.data.subsets import class_targets, stratified_fraction

# Per-class tolerance: at least the target max(1, round(f * n_c)) is kept, and at most
# max(1, 10 % of f * n_c) above f * n_c (the overshoot from co-occurring rarer classes).
RELATIVE_TOLERANCE = 0.10


def multi_label_tags(n_images: int = 600, n_classes: int = 8, seed: int = 0) -> np.ndarray:
    """Imbalanced multi-label tags (class frequencies 4 % .. 40 %), every image tagged."""
    rng = np.random.default_rng(seed)
    tags = rng.random((n_images, n_classes)) < np.linspace(0.04, 0.40, n_classes)
    empty = ~tags.any(axis=1)
    tags[empty, rng.integers(0, n_classes, empty.sum())] = True
    return tags


@pytest.mark.parametrize("fraction", [1 / 2, 1 / 4, 1 / 8, 1 / 16])
def test_each_class_keeps_its_fraction(fraction):
    tags = multi_label_tags()
    keep = stratified_fraction(tags, fraction, seed=0)
    assert keep.dtype == np.int64 and np.all(np.diff(keep) > 0)  # sorted, no repeats
    n_c = tags.sum(axis=0)
    kept_c = tags[keep].sum(axis=0)
    expected = fraction * n_c
    assert np.all(kept_c >= np.maximum(1, np.floor(expected + 0.5)))
    assert np.all(kept_c - expected <= np.maximum(1, RELATIVE_TOLERANCE * expected))
    assert abs(len(keep) - fraction * len(tags)) <= RELATIVE_TOLERANCE * fraction * len(tags)


def test_rare_class_keeps_at_least_one_image():
    tags = np.zeros((40, 2), dtype=bool)
    tags[:, 0] = True
    tags[3, 1] = True  # one image of class 1
    keep = stratified_fraction(tags, 1 / 16, seed=1)
    assert 3 in keep
    assert tags[keep, 0].sum() == 3  # round(40 / 16) = 2.5 -> 3 (half rounds up)


def test_targets_by_hand():
    tags = np.zeros((10, 3), dtype=bool)
    tags[:10, 0] = True
    tags[:3, 1] = True  # class 2 has no image
    np.testing.assert_array_equal(class_targets(tags, 0.25), [3, 1, 0])  # 2.5 -> 3, 0.75 -> 1


def test_same_seed_same_indices_different_seed_different():
    tags = multi_label_tags()
    a = stratified_fraction(tags, 0.25, seed=3)
    np.testing.assert_array_equal(a, stratified_fraction(tags, 0.25, seed=3))
    assert not np.array_equal(a, stratified_fraction(tags, 0.25, seed=4))


def test_fraction_one_keeps_everything():
    tags = multi_label_tags(50)
    np.testing.assert_array_equal(stratified_fraction(tags, 1.0, seed=0), np.arange(50))


def test_untagged_images_are_sampled_at_the_fraction():
    tags = np.zeros((20, 1), dtype=bool)
    tags[:8, 0] = True
    keep = stratified_fraction(tags, 0.5, seed=0)
    assert (keep < 8).sum() == 4 and (keep >= 8).sum() == 6


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="fraction"):
        stratified_fraction(np.ones((4, 2), dtype=bool), fraction, seed=0)
