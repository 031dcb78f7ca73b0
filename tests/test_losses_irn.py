import math

import pytest
import torch

from rpnet.losses import affinity_loss, displacement_loss, irn_loss
from rpnet.ops.affinity import AffinityLabels, affinity_labels, path_index

EPS = 1e-5  # IRN's guards, in the logs and in the counts


def _masks(bg, fg, neg):
    return AffinityLabels(*(torch.tensor(m, dtype=torch.bool).view(1, -1, 1, 1) for m in (bg, fg, neg)))


def test_affinity_loss_values_by_hand():
    aff = torch.tensor([0.5, 1.0, 0.5, 0.25]).view(1, 4, 1, 1)  # four pairs
    labels = _masks(bg=[1, 0, 0, 0], fg=[0, 1, 1, 0], neg=[0, 0, 0, 1])
    loss = affinity_loss(aff, labels)
    assert loss.bg_pos.item() == pytest.approx(-math.log(0.5 + EPS) / (1 + EPS))
    # fg: mean of -log(1) and -log(0.5) over two pairs
    assert loss.fg_pos.item() == pytest.approx((-math.log(1 + EPS) - math.log(0.5 + EPS)) / (2 + EPS))
    assert loss.neg.item() == pytest.approx(-math.log(1 + EPS - 0.25) / (1 + EPS))


def test_affinity_loss_of_an_empty_kind_is_zero():
    aff = torch.full((1, 2, 1, 1), 0.3)
    loss = affinity_loss(aff, _masks(bg=[1, 1], fg=[0, 0], neg=[0, 0]))
    assert loss.fg_pos.item() == 0 and loss.neg.item() == 0


def test_displacement_loss_values_by_hand():
    offsets = torch.tensor([[0.0, 1.0], [1.0, -1.0]])  # (2, O): offsets (0, 1) and (1, -1)
    # pair 0 (fg): D(from) - D(to) = (0, 1) = its offset -> 0; pair 1 (fg): (0, 0) vs (1, -1) -> 1 + 1
    fg_disp = torch.tensor([[0.0, 0.0], [1.0, 0.0]]).view(1, 2, 2, 1, 1)
    loss = displacement_loss(fg_disp, offsets, _masks(bg=[0, 0], fg=[1, 1], neg=[0, 0]))
    assert loss.fg.item() == pytest.approx(2.0 / (2 * 2 + EPS))  # mean over 2 pairs x 2 components
    # bg pairs want equal displacements: |0.4| + |-0.2| over one pair's two components
    bg_disp = torch.tensor([[0.4, 9.0], [-0.2, 9.0]]).view(1, 2, 2, 1, 1)
    loss = displacement_loss(bg_disp, offsets, _masks(bg=[1, 0], fg=[0, 0], neg=[0, 1]))
    assert loss.bg.item() == pytest.approx(0.6 / (2 + EPS))
    assert loss.fg.item() == 0


def test_irn_loss_weighting_on_a_uniform_prediction():
    index = path_index(2)  # offsets (0,1), (1,-1), (1,0), (1,1)
    label = torch.ones(1, 3, 4, dtype=torch.long)  # one class everywhere: 2x2 "from" grid, all fg pairs
    labels = affinity_labels(label, index)
    edge = torch.zeros(1, 1, 3, 4, requires_grad=True)  # sigmoid 0.5 -> every affinity 0.5
    disp = torch.zeros(1, 2, 3, 4, requires_grad=True)
    loss = irn_loss(edge, disp, labels, index)
    fg_pos = -math.log(0.5 + EPS) * 16 / (16 + EPS)
    # zero displacements: |offset| per pair, (0.5, 1, 0.5, 1) per component mean -> 0.75
    disp_fg = (4 * (1 + 2 + 1 + 2)) / (2 * 16 + EPS)
    assert loss.affinity.fg_pos.item() == pytest.approx(fg_pos)
    assert loss.affinity.bg_pos.item() == 0 and loss.affinity.neg.item() == 0
    assert loss.displacement.fg.item() == pytest.approx(disp_fg)
    # IRN: ((bg + fg) / 2 + neg) / 2 + (disp_fg + disp_bg) / 2
    assert loss.total.item() == pytest.approx(fg_pos / 4 + disp_fg / 2)
    loss.total.backward()
    assert edge.grad.abs().sum() > 0 and disp.grad.abs().sum() > 0


def test_irn_loss_fg_pos_weight_scales_only_the_foreground_term():
    index = path_index(2)
    # left half class 1, right half background: fg, bg and negative pairs all occur
    label = torch.zeros(1, 4, 6, dtype=torch.long)
    label[..., :3] = 1
    labels = affinity_labels(label, index)
    edge = torch.linspace(-2, 2, 24).view(1, 1, 4, 6)
    disp = torch.zeros(1, 2, 4, 6)
    plain = irn_loss(edge, disp, labels, index)
    weighted = irn_loss(edge, disp, labels, index, fg_pos_weight=3.0)
    assert plain.affinity.fg_pos > 0 and plain.affinity.bg_pos > 0 and plain.affinity.neg > 0
    # ((bg + 3 fg) / 2 + neg) / 2 - ((bg + fg) / 2 + neg) / 2 = fg / 2; the parts themselves do not change
    assert weighted.total.item() - plain.total.item() == pytest.approx(plain.affinity.fg_pos.item() / 2)
    for a, b in zip((*weighted.affinity, *weighted.displacement), (*plain.affinity, *plain.displacement)):
        assert a.item() == b.item()
