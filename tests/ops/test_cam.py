import numpy as np
import torch

from rpnet.ops.cam import cams_to_labels, class_activation_maps, max_normalize, multiscale_mean_cams, tag_masked


def test_cam_is_relu_of_classifier_weights_dot_features():
    f = torch.tensor([[[[1.0, -1.0]], [[2.0, 0.0]]]])  # (1, D=2, 1, 2)
    w = torch.tensor([[1.0, 1.0], [-1.0, 0.0]]).view(2, 2, 1, 1)
    cams = class_activation_maps(f, w)
    # class 0: 1+2=3, -1+0=-1 -> relu 0; class 1: -1 -> 0, 1
    torch.testing.assert_close(cams, torch.tensor([[[[3.0, 0.0]], [[0.0, 1.0]]]]))


def test_max_normalize_and_tag_mask():
    cams = torch.tensor([[[[2.0, 4.0]], [[1.0, 0.5]]]])
    n = max_normalize(cams, eps=0.0)
    torch.testing.assert_close(n, torch.tensor([[[[0.5, 1.0]], [[1.0, 0.5]]]]))
    torch.testing.assert_close(tag_masked(n, torch.tensor([[0.0, 1.0]])), torch.tensor([[[[0.0, 0.0]], [[1.0, 0.5]]]]))


def test_cams_to_labels_background_threshold_and_keys():
    cams = np.array([[[0.1, 0.5, 0.9]], [[0.05, 0.6, 0.2]]], dtype=np.float32)  # classes 3 and 7
    labels = cams_to_labels(cams, np.array([3, 7]), threshold=0.15)
    assert labels.tolist() == [[0, 8, 4]]


def test_multiscale_mean_cams_resizes_raw_maps_then_rectifies():
    # [-2, 2] resized to 4 columns (bilinear, corners not aligned): sources -0.25, 0.25, 0.75, 1.25
    # -> [-2, -1, 1, 2]; relu -> [0, 0, 1, 2] (relu first would give [0, 0.5, 1.5, 2]).
    small = torch.tensor([[[[-2.0, 2.0]]]])
    big = torch.zeros(1, 1, 1, 4)
    # mean of relu(big) = 0 and [0, 0, 1, 2]
    torch.testing.assert_close(multiscale_mean_cams([big, small], (1, 4)), torch.tensor([[[[0.0, 0.0, 0.5, 1.0]]]]))
