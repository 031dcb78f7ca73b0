import numpy as np

from rpnet.metrics import ConfusionMatrix, per_class_iou


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


def test_merge_adds():
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(np.array([0, 1]), np.array([0, 0]))
    b.update(np.array([1]), np.array([1]))
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, [[1, 0], [1, 1]])
