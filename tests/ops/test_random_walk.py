import pytest
import torch

from rpnet.ops.random_walk import (
    affinity_stencil,
    pseudo_label_from_walk,
    random_walk,
    random_walk_dense_reference,
    random_walk_stencil,
    sparse_affinity,
    stencil_to_sparse,
    transition_matrix,
    transition_stencil,
)

IRN = {"radius": 5, "beta": 10}  # IRN's walk: radius 5, affinity ** 10 (its steps 2^8, background 0.25)


def _random_edge(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 * torch.rand(h, w, generator=g, dtype=torch.float64)


def test_sparse_affinity_worked_by_hand():
    # 1x3 map, the middle pixel half boundary; radius 2 links only horizontal neighbours
    edge = torch.tensor([[0.0, 0.5, 0.0]])
    a = sparse_affinity(edge, radius=2, beta=2).to_dense()
    # each pair's path contains the middle pixel: (1 - 0.5) ** 2 = 0.25; pixels 0 and 2 are 2 apart
    expected = torch.tensor([[1.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 1.0]])
    torch.testing.assert_close(a, expected)
    t = transition_matrix(sparse_affinity(edge, radius=2, beta=2)).to_dense()
    torch.testing.assert_close(t[:, 0], torch.tensor([0.8, 0.2, 0.0]))  # column / 1.25
    torch.testing.assert_close(t[:, 1], torch.tensor([0.25, 1.0, 0.25]) / 1.5)


def test_affinity_is_symmetric_with_self_loops():
    a = sparse_affinity(_random_edge(6, 7), radius=5, beta=10).to_dense()
    torch.testing.assert_close(a, a.t())
    torch.testing.assert_close(a.diagonal(), torch.ones(42, dtype=torch.float64))
    # pixels 5 or more apart are not linked: (0, 0) and (0, 5)
    assert a[0, 5] == 0 and a[0, 4] > 0


def test_transition_is_column_stochastic():
    edge = _random_edge(6, 7)
    t = transition_matrix(sparse_affinity(edge, **IRN)).to_dense()
    torch.testing.assert_close(t.sum(dim=0), torch.ones(42, dtype=torch.float64), atol=1e-5, rtol=0)
    stencil = transition_stencil(affinity_stencil(edge, **IRN))
    torch.testing.assert_close(stencil_to_sparse(stencil).to_dense(), t)


def test_walks_equal_the_dense_matrix_power():
    edge = _random_edge(6, 7)
    cams = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = transition_matrix(sparse_affinity(edge, radius=5, beta=10))
    want = random_walk_dense_reference(cams, t, steps=256)
    torch.testing.assert_close(random_walk(cams, t, steps=256), want, atol=1e-9, rtol=0)
    stencil = transition_stencil(affinity_stencil(edge, radius=5, beta=10))
    torch.testing.assert_close(random_walk_stencil(cams, stencil, steps=256), want, atol=1e-9, rtol=0)


def test_a_boundary_line_stops_the_walk():
    edge = torch.zeros(6, 9)
    edge[:, 4] = 1.0  # a wall down column 4
    cams = torch.zeros(1, 6, 9)
    cams[0, 2, 1] = 1.0
    stencil = transition_stencil(affinity_stencil(edge, **IRN))
    walked = random_walk_stencil(cams, stencil, steps=256)
    assert walked[0, :, 4:].abs().max() == 0  # nothing crosses, nothing reaches the wall
    assert walked[0, :, :4].min() > 0  # the left side is connected: everything gets some
    sparse = random_walk(cams, transition_matrix(sparse_affinity(edge, **IRN)), steps=256)
    torch.testing.assert_close(sparse, walked)


def test_walk_averages_so_it_keeps_constants_and_range():
    # v <- v T with column-stochastic T makes every value a weighted average of the old ones:
    # constants stay, values stay within [min, max] (the sum is not conserved in this direction).
    edge = _random_edge(6, 7).float()
    stencil = transition_stencil(affinity_stencil(edge, **IRN))
    ones = torch.ones(1, 6, 7)
    torch.testing.assert_close(random_walk_stencil(ones, stencil, steps=16), ones)
    cams = torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(2)) + 0.1
    walked = random_walk_stencil(cams, stencil, steps=16)
    for c in range(2):
        assert walked[c].min() >= cams[c].min() - 1e-6
        assert walked[c].max() <= cams[c].max() + 1e-6


def test_pseudo_label_fills_regions_up_to_the_boundary():
    # stride-4 maps of 4x7 for a 16x28 image; a wall down column 3, one CAM peak on each side
    edge = torch.zeros(4, 7)
    edge[:, 3] = 1.0
    cams = torch.zeros(2, 4, 7)
    cams[0, 1, 1] = 1.0  # class 5 on the left
    cams[1, 2, 5] = 1.0  # class 9 on the right
    label = pseudo_label_from_walk(cams, [5, 9], edge, (16, 28), **IRN, steps=256, bg_threshold=0.25)
    assert label.dtype == torch.uint8 and label.shape == (16, 28)
    # the walk spreads each peak evenly over its side (both sides alike, so both reach ~1 after
    # the global max); bilinear upsampling puts the wall's zero over full-size columns 13-14
    assert torch.all(label[:, :12] == 6)
    assert torch.all(label[:, 13:15] == 0)
    assert torch.all(label[:, 16:] == 10)


def test_pseudo_label_uses_one_global_max_and_the_background_threshold():
    edge = torch.zeros(4, 6)
    edge[:, 3] = 1.0
    cams = torch.zeros(2, 4, 6)
    cams[0, :, :3] = 1.0  # strong class 2, left
    cams[1, :, 4:] = 0.2  # weak class 7, right: 0.2 of the global max stays below 0.25
    label = pseudo_label_from_walk(cams, torch.tensor([2, 7]), edge, (16, 24), **IRN, steps=256, bg_threshold=0.25)
    assert torch.all(label[:, :10] == 3)
    assert torch.all(label[:, 13:] == 0)
    label = pseudo_label_from_walk(cams, torch.tensor([2, 7]), edge, (16, 24), **IRN, steps=256, bg_threshold=0.1)
    assert torch.all(label[:, 17:] == 8)


def test_pseudo_label_without_classes_is_background():
    label = pseudo_label_from_walk(torch.zeros(0, 3, 4), [], torch.zeros(3, 4), (10, 13), **IRN, steps=256, bg_threshold=0.25)
    assert label.shape == (10, 13) and label.max() == 0


def test_pseudo_label_checks_sizes():
    with pytest.raises(ValueError, match="keys"):
        pseudo_label_from_walk(torch.zeros(2, 3, 4), [1], torch.zeros(3, 4), (12, 16), **IRN, steps=256, bg_threshold=0.25)
    with pytest.raises(ValueError, match="cover"):
        pseudo_label_from_walk(torch.zeros(1, 3, 4), [1], torch.zeros(3, 4), (13, 16), **IRN, steps=256, bg_threshold=0.25)
