import pytest
import torch

from rpnet.engine.schedule import poly_lr, set_poly_lr, sgd_param_groups


def test_poly_lr_by_hand():
    assert poly_lr(0.1, 0, 100) == 0.1
    assert poly_lr(0.1, 50, 100, power=1.0) == pytest.approx(0.05)
    assert poly_lr(0.02, 75, 100, power=0.9) == pytest.approx(0.02 * 0.25**0.9)
    assert poly_lr(0.1, 100, 100) == 0.0
    assert poly_lr(0.1, 150, 100) == 0.0


def test_new_layers_get_ten_times_the_rate_at_every_step():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    groups = sgd_param_groups([a], [b], lr=0.02, weight_decay=1e-4, new_lr_mult=10)
    opt = torch.optim.SGD(groups, lr=0.02, momentum=1e-4)
    set_poly_lr(opt, [0.02, 0.2], step=10, total_steps=40, power=0.9)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[1] == pytest.approx(10 * lrs[0]) and lrs[0] == pytest.approx(0.02 * 0.75**0.9)
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)
