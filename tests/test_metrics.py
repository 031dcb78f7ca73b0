import numpy as np

from rpnet.metrics import ConfusionMatrix, RegionRates, per_class_iou


def test_confusion_matrix_counts_and_iou_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3)
    cm.update(gt, pred)
    expected = np.array([[1, 1, 0], [0, 3, 0], [1, 0, 1]])
    np.testing.assert_array_equal(cm.matrix, expected)
    # IoU0 = 1/(1+1+1) ; IoU1 = 3/(3+1+0) ; IoU2 = 1/(1+0+1)
    np.testing.assert_allclose(cm.iou(), [1 / 3, 3 / 4, 1 / 2])
    assert abs(cm.miou() - (1 / 3 + 3 / 4 + 1 / 2) / 3) < 1e-12
    assert per_class_iou(cm, ["bg", "a", "b"]) == {"bg": 33.33, "a": 75.0, "b": 50.0}


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(cm.iou()[2])
    assert cm.miou() == 1.0
    assert per_class_iou(cm, ["bg", "a", "b"])["b"] is None


def test_never_predicted_names_the_classes_of_the_ground_truth_without_a_predicted_pixel():
    cm = ConfusionMatrix(4)
    # class 1: in the ground truth, never predicted; 2: predicted, not in the ground truth; 3: absent from both
    cm.update(np.array([0, 1, 1, 0]), np.array([0, 0, 2, 2]))
    assert cm.never_predicted() == [1]
    cm.update(np.array([3]), np.array([0]))
    assert cm.never_predicted() == [1, 3]


def test_merge_adds():
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(np.array([0, 1]), np.array([0, 0]))
    b.update(np.array([1]), np.array([1]))
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, [[1, 0], [1, 1]])


def test_region_rates_by_hand():
    # regions: 1 part, 2 body (object regions), 3 context, 4 other background; 255 in parts is not counted
    gt = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    parts = np.array([[1, 2, 2, 3], [3, 4, 4, 255]])
    pred = np.array([[1, 1, 0, 1], [0, 2, 0, 1]])
    rates = RegionRates(4, objects=(1, 2))
    rates.update(gt, pred, parts)
    # part: 1 of 1 found; body: 1 of 2; context: 1 of 2 pixels labelled foreground; other: 1 of 2
    assert rates.counts.tolist() == [[0, 0], [1, 1], [2, 1], [2, 1], [2, 1]]
    np.testing.assert_allclose(rates.rates()[1:], [1.0, 0.5, 0.5, 0.5])
    assert np.isnan(RegionRates(4, objects=(1, 2)).rates()[1])  # no pixel: no rate
