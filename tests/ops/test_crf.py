import numpy as np
import pytest

from rpnet.ops.crf import confident_labels, crf_label, crf_refine_probs

# Noisy pixels flipped in a two-region label map, none next to the region border (column 20).
NOISE = [(3, 4), (10, 10), (30, 5), (25, 15), (5, 25), (15, 33), (35, 28), (20, 38), (12, 2), (33, 36)]


def _two_regions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 40x40 image, blue left half and yellow right half; its true and noisy label maps."""
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :20] = (40, 60, 200)
    image[:, 20:] = (220, 200, 30)
    truth = np.zeros((40, 40), np.int64)
    truth[:, 20:] = 1
    noisy = truth.copy()
    for y, x in NOISE:
        noisy[y, x] = 1 - noisy[y, x]
    return image, truth, noisy


def test_crf_label_fixes_isolated_noise():
    image, truth, noisy = _two_regions()
    assert (noisy != truth).sum() == len(NOISE)
    out = crf_label(image, noisy, n_labels=2)
    assert out.shape == (40, 40)
    assert (out != truth).sum() == 0


def test_crf_label_stays_within_the_input_labels():
    image, truth, noisy = _two_regions()
    out = crf_label(image, 2 * noisy, n_labels=3)  # labels 0 and 2 of 0..2
    assert set(np.unique(out)) <= {0, 2}
    assert (out != 2 * truth).sum() == 0


def test_crf_label_one_label_everywhere_is_unchanged():
    image, _, _ = _two_regions()
    ones = np.ones((40, 40), np.int64)
    assert np.array_equal(crf_label(image, ones, n_labels=3), ones)
    zeros = np.zeros((40, 40), np.int64)
    assert np.array_equal(crf_label(image, zeros, n_labels=1), zeros)


def test_crf_label_rejects_bad_inputs():
    image, _, noisy = _two_regions()
    with pytest.raises(ValueError, match="0..1"):
        crf_label(image, noisy + 1, n_labels=2)
    with pytest.raises(ValueError, match="uint8"):
        crf_label(image.astype(np.float32), noisy, n_labels=2)


def test_crf_refine_probs_gives_distributions_and_fixes_noise():
    image, truth, noisy = _two_regions()
    probs = np.stack([0.9 - 0.8 * noisy, 0.1 + 0.8 * noisy]).astype(np.float32)
    out = crf_refine_probs(image, probs)
    assert out.shape == (2, 40, 40) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-4)
    assert (out.argmax(axis=0) != truth).sum() == 0


def test_confident_labels_on_a_hand_made_cam():
    image = np.full((40, 40, 3), 100, np.uint8)
    image[10:20, 5:15] = (230, 30, 30)  # a red object
    image[3:8, 5:15] = (30, 30, 230)  # a blue patch the CAM only grazes
    image[25:35, 25:35] = (30, 230, 30)  # a green object
    cams = np.zeros((2, 40, 40), np.float32)
    cams[0, 10:20, 5:15] = 1.0  # class 2: above fg 0.30
    cams[0, 3:8, 5:15] = 0.1  # class 2: between bg 0.05 and fg 0.30 -> unsure
    cams[1, 25:35, 25:35] = 0.8  # class 6
    out = confident_labels(image, cams, np.array([2, 6]), fg_threshold=0.30, bg_threshold=0.05)
    expected = np.zeros((40, 40), np.uint8)
    expected[10:20, 5:15] = 3
    expected[3:8, 5:15] = 255
    expected[25:35, 25:35] = 7
    assert out.dtype == np.uint8
    assert np.array_equal(out, expected)


def test_confident_labels_without_classes_is_background():
    image = np.zeros((8, 9, 3), np.uint8)
    out = confident_labels(image, np.zeros((0, 8, 9), np.float32), np.array([], dtype=np.int64))
    assert out.shape == (8, 9) and out.max() == 0
