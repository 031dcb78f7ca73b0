"""Pictures for people: the label overlay and the legend, worked by hand."""

import numpy as np

from rpnet.viz import LEGEND_ROW, label_overlay, legend_image


def test_label_overlay_tints_foreground_only():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [255, 0]], np.uint8)
    out = label_overlay(image, labels, alpha=0.5)
    assert np.array_equal(out[0, 0], [100, 100, 100]) and np.array_equal(out[1, 0], [100, 100, 100])
    assert np.array_equal(out[0, 1], [114, 50, 50])  # VOC colour of label 1 is (128, 0, 0): (100 + 128) / 2, 100 / 2
    # taller than a band of rows: every band gets the same rule
    tall = np.full((150, 1, 3), 100, np.uint8)
    stripes = (np.arange(150) % 2).astype(np.uint8)[:, None]
    out = label_overlay(tall, stripes, alpha=0.5)
    assert (out[1::2, 0] == [114, 50, 50]).all() and (out[0::2, 0] == 100).all()


def test_the_legend_has_a_row_per_foreground_class_in_its_colour():
    legend = legend_image(["background", "cat", "dog"])
    assert legend.shape == (2 * LEGEND_ROW, 240, 3)
    assert tuple(legend[LEGEND_ROW // 2, 8]) == (128, 0, 0) and tuple(legend[LEGEND_ROW + LEGEND_ROW // 2, 8]) == (0, 128, 0)
