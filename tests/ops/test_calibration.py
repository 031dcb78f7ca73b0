"""The threshold estimators of rpnet.ops.calibration, on histograms worked out by hand."""

import numpy as np
import pytest

from rpnet.ops.calibration import otsu_thresholds3, score_histogram


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
