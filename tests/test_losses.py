import math

import pytest
import torch

from rpnet.losses import (
    cam_consistency_loss, cam_map_consistency_loss, classifier_loss, feature_consistency_loss, multilabel_loss,
)
from rpnet.models.rpnet import ClassifierOutput


def test_multilabel_loss_matches_eq12_by_hand():
    v = torch.tensor([[2.0, -1.0]])
    u = torch.tensor([[1.0, 0.0]])
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    expected = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0))) / 2
    assert abs(multilabel_loss(v, u).item() - expected) < 1e-6


def test_cam_consistency_zero_when_enhancement_is_a_positive_scale():
    f = torch.rand(2, 4, 3, 3)
    w = torch.randn(3, 4, 1, 1)
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    # max-normalised CAMs do not change when f'_N = 2 f_N
    assert cam_consistency_loss(f, 2 * f, w, tags).item() < 1e-10


def test_cam_consistency_by_hand():
    f = torch.tensor([[[[1.0, 2.0]]]])  # (1, 1, 1, 2)
    fe = torch.tensor([[[[1.0, 0.0]]]])
    w = torch.ones(1, 1, 1, 1)
    # CAMs after max normalisation: [0.5, 1] and [1, 0]; squared differences 0.25, 1 -> mean 0.625
    loss = cam_consistency_loss(f, fe, w, torch.ones(1, 1))
    assert abs(loss.item() - 0.625) < 1e-4
    assert cam_consistency_loss(f, fe, w, torch.zeros(1, 1)).item() == 0.0  # untagged: masked out


def test_feature_consistency_is_sum_over_positions():
    f = torch.zeros(2, 1, 2, 2)
    fe = torch.ones(2, 1, 2, 2)
    assert feature_consistency_loss(f, fe).item() == 4.0


def test_classifier_loss_baseline_and_rpnet_terms():
    tags = torch.tensor([[1.0, 0.0]])
    base = ClassifierOutput(logits=torch.tensor([[1.0, -1.0]]), features=torch.rand(1, 2, 2, 2))
    out = classifier_loss(base, tags, torch.ones(2, 2, 1, 1))
    assert out.consistency.item() == 0 and torch.equal(out.total, out.cls)
    f = torch.rand(1, 2, 2, 2)
    rp = ClassifierOutput(logits=torch.tensor([[5.0, 5.0]]), features=f,
                          logits_enhanced=torch.tensor([[1.0, -1.0]]), features_enhanced=f * 0.5)
    out = classifier_loss(rp, tags, torch.randn(2, 2, 1, 1), lambda_s=10.0)
    torch.testing.assert_close(out.cls, multilabel_loss(rp.logits_enhanced, tags))  # L_c on the enhanced branch
    torch.testing.assert_close(out.total, out.cls + 10.0 * out.consistency)
    both = classifier_loss(rp, tags, torch.randn(2, 2, 1, 1), lc_on_original=True)
    torch.testing.assert_close(both.cls, multilabel_loss(rp.logits_enhanced, tags) + multilabel_loss(rp.logits, tags))


def test_segmentation_loss_by_hand_and_ignored_pixels_do_not_count():
    from rpnet.losses import segmentation_loss

    # pixel 0: logits (0, ln 3) -> p(class 1) = 3/4; pixel 1: logits (0, 0) -> p = 1/2 for either class
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    both = segmentation_loss(logits, torch.tensor([[[1, 0]]]))
    assert abs(both.item() - (-math.log(0.75) + math.log(2.0)) / 2) < 1e-6
    one = segmentation_loss(logits, torch.tensor([[[1, 255]]]))
    assert abs(one.item() - (-math.log(0.75))) < 1e-6  # the mean is over the one labelled pixel
    one.backward()
    assert torch.all(logits.grad[..., 1] == 0)  # the ignored pixel gets no gradient


def test_segmentation_loss_of_an_all_ignored_batch_is_zero_not_nan():
    from rpnet.losses import segmentation_loss

    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 4, 4), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_classifier_loss_lc_branches_and_cams_given_by_the_model():
    tags = torch.tensor([[1.0, 0.0]])
    f = torch.rand(1, 2, 2, 2)
    rp = ClassifierOutput(logits=torch.tensor([[5.0, 5.0]]), features=f,
                          logits_enhanced=torch.tensor([[1.0, -1.0]]), features_enhanced=f * 0.5)
    w = torch.randn(2, 2, 1, 1)
    original_only = classifier_loss(rp, tags, w, lc_on_original=True, lc_on_enhanced=False)
    torch.testing.assert_close(original_only.cls, multilabel_loss(rp.logits, tags))  # the released code's L_c
    with pytest.raises(ValueError, match="branch"):
        classifier_loss(rp, tags, w, lc_on_original=False, lc_on_enhanced=False)
    # CAMs from the model win over the classifier weight: [1, 2] vs [1, 0] on one class, tagged;
    # max-normalised [0.5, 1] and [1, 0] -> squared differences 0.25, 1 -> mean 0.625
    given = rp._replace(cams=torch.tensor([[[[1.0, 2.0]]]]), cams_enhanced=torch.tensor([[[[1.0, 0.0]]]]))
    loss = classifier_loss(given, torch.ones(1, 1), w)
    assert abs(loss.consistency.item() - 0.625) < 1e-4
    assert abs(cam_map_consistency_loss(given.cams, given.cams_enhanced, torch.ones(1, 1)).item() - 0.625) < 1e-4
