"""The threshold estimators of rpnet.ops.calibration, on histograms worked out by hand."""

import numpy as np
import pytest

from rpnet.ops.calibration import (choose_candidate, jackknife_interval, held_out_matrices, miou_of, otsu_thresholds3,
                                   score_histogram, threshold_confusions)


def test_score_histogram_bins_values_in_unit_steps_and_clips():
    hist = score_histogram(np.array([0.0, 0.004, 0.006, 0.5, 1.0, 1.2, -0.1]), bins=200)
    assert hist.shape == (200,) and hist.sum() == 7
    assert hist[0] == 3 and hist[1] == 1 and hist[100] == 1 and hist[199] == 2


def test_otsu_thresholds3_separates_three_modes():
    # Bins of width 0.2: modes in bins 0, 2 and 4. Any split that keeps them apart scores
    # 0.3^2/3 + 1.5^2/3 + 2.7^2/3 = 3.21, one that merges two less; the lowest such edges are 0.2 and 0.6.
    assert otsu_thresholds3(np.array([3, 0, 3, 0, 3])) == (0.2, 0.6)
    # An unbalanced middle mode moves the edges, but not across it.
    low, high = otsu_thresholds3(np.array([10, 0, 1, 0, 0, 0, 0, 0, 0, 5]))
    assert 0.1 <= low <= 0.2 and 0.3 <= high <= 0.9
    with pytest.raises(ValueError):
        otsu_thresholds3(np.array([1, 0, 1, 0]))


# --------------------------------------------------------------------------- with a few masks


def test_threshold_confusions_counts_each_pixel_at_each_threshold_by_hand():
    # Four pixels: best-class labels 1, 1, 2, 2 with scores 0.2, 0.6, 0.6, 0.9; ground truth 1, 0, 2, 255.
    # t = 0.5: pixel 0 -> background (gt 1: a miss), pixel 1 -> 1 (gt 0: a false positive), pixel 2 -> 2 (hit),
    # pixel 3 ignored. t = 0.6: the tie at 0.6 goes to the background, so pixels 1 and 2 become background.
    fg = np.array([[1, 1], [2, 2]])
    scores = np.array([[0.2, 0.6], [0.6, 0.9]], dtype=np.float32)
    gt = np.array([[1, 0], [2, 255]])
    m = threshold_confusions(fg, scores, gt, np.array([0.1, 0.5, 0.6]), num_labels=3)
    assert m.shape == (3, 3, 3)
    assert m[0].tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]  # t = 0.1: every pixel keeps its class
    assert m[1].tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert m[2].tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]
    # an image without a tagged class (-inf scores) is background at every threshold
    none = threshold_confusions(np.zeros((1, 2), int), np.full((1, 2), -np.inf, np.float32), np.array([[0, 1]]),
                                np.array([0.3]), 2)
    assert none[0].tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError, match="increase"):
        threshold_confusions(fg, scores, gt, np.array([0.5, 0.1]), 3)


def test_miou_of_averages_the_labels_that_occur():
    # label 0: tp 3, fp 1, fn 0 -> 3/4; label 1: tp 1, fn 1 -> 1/2; label 2 never occurs
    matrix = np.array([[3, 0, 0], [1, 1, 0], [0, 0, 0]])
    assert miou_of(matrix) == pytest.approx((0.75 + 0.5) / 2)
    assert miou_of(np.stack([matrix, np.zeros((3, 3))])).tolist() == pytest.approx([0.625, 0.0])


def two_images_three_candidates():
    """Two 2-label images scored under three candidate rules (M, K, 2, 2)."""
    perfect = np.array([[2, 0], [0, 2]])  # mIoU 1
    half = np.array([[2, 0], [2, 0]])  # every object pixel missed: IoU(0) 2/4, IoU(1) 0 -> 0.25
    spill = np.array([[0, 2], [0, 2]])  # every background pixel taken: 0.25
    return np.array([[perfect, half],    # candidate 0: right on image 0 only
                     [half, perfect],    # candidate 1: right on image 1 only
                     [spill, spill]])    # candidate 2: wrong on both


def test_choose_candidate_pools_the_images_and_breaks_ties_by_order():
    evidence = two_images_three_candidates()
    # pooled, candidates 0 and 1 are both [[4, 0], [2, 2]]: IoU 4/6 and 2/4, mIoU 7/12; candidate 2 [[0, 4], [0, 4]]: 0.25
    assert miou_of(evidence.sum(1)).tolist() == pytest.approx([7 / 12, 7 / 12, 0.25])
    assert choose_candidate(evidence) == 0


def test_held_out_matrices_score_each_image_by_the_choice_made_without_it():
    evidence = two_images_three_candidates()
    # without image 0, candidate 1 is best (perfect on image 1): image 0 gets candidate 1's matrix, "half";
    # without image 1, candidate 0 is best: image 1 gets "half" too. In-sample the best scores 7/12; held out 0.25.
    held = held_out_matrices(evidence)
    assert held.tolist() == [[[2, 0], [2, 0]], [[2, 0], [2, 0]]]
    assert miou_of(held.sum(0)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="two images"):
        held_out_matrices(evidence[:, :1])


def test_jackknife_interval_by_hand():
    perfect, half = np.array([[2, 0], [0, 2]]), np.array([[2, 0], [2, 0]])
    # images perfect, perfect, half: pooled [[6, 0], [2, 4]] -> (6/8 + 4/6) / 2 = 0.708333. Without a perfect
    # one 7/12 (twice), without the half 1: mean 0.722222, squared deviations 2 x 0.0192901 + 0.0771605
    # = 0.1157407, standard error sqrt(2/3 x 0.1157407) = 0.2777778. Student's t at 0.75, 2 degrees of
    # freedom, is 0.8164966 (a 50 % interval): 0.708333 -+ 0.2268046.
    low, high = jackknife_interval(np.stack([perfect, perfect, half]), level=0.5)
    assert (low, high) == pytest.approx((0.4815287, 0.9351379), abs=1e-6)
    # identical images: no spread; two images at 90 %: t = 6.31, clipped to [0, 1]
    assert jackknife_interval(np.stack([perfect] * 4)) == pytest.approx((1.0, 1.0))
    assert jackknife_interval(np.stack([perfect, half])) == (0.0, 1.0)
    with pytest.raises(ValueError, match="two images"):
        jackknife_interval(perfect[None])
