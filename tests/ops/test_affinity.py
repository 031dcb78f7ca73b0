import pytest
import torch

from rpnet.ops.affinity import (
    affinity_labels,
    boundary_to_affinity,
    downsample_labels,
    line_path,
    pair_difference,
    path_affinity,
    path_index,
    search_offsets,
)

# 4x5 label map: a 2-pixel object of class 1 and one ignored pixel.
LABEL = torch.tensor([
    [0, 0, 0, 0, 0],
    [0, 1, 1, 0, 0],
    [0, 0, 0, 0, 255],
    [0, 0, 0, 0, 0],
])


def test_search_offsets_are_the_half_disc():
    assert search_offsets(2) == ((0, 1), (1, -1), (1, 0), (1, 1))
    # radius 5, counted by hand: dy=0: dx 1..4 (4); dy=1: |dx|<=4 (9); dy=2: |dx|<=4 (9);
    # dy=3: |dx|<=3 (7); dy=4: |dx|<=2 (5).
    offsets = search_offsets(5)
    assert len(offsets) == 4 + 9 + 9 + 7 + 5
    assert all(0 < dy * dy + dx * dx < 25 for dy, dx in offsets)
    assert not any((-dy, -dx) in offsets for dy, dx in offsets)  # each unordered pair once
    with pytest.raises(ValueError, match="radius"):
        search_offsets(1)


def test_line_path_points():
    assert line_path((0, 3)) == ((0, 0), (0, 1), (0, 2), (0, 3))
    # a diagonal step keeps both corner pixels (distance 1/sqrt(2) < 1 from the line)
    assert set(line_path((1, 1))) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # (2, 2): the points with |x - y| <= 1 of the 3x3 box; (0, 2) and (2, 0) are sqrt(2) away
    assert set(line_path((2, 2))) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)}
    assert set(line_path((1, -1))) == {(0, 0), (0, -1), (1, -1), (1, 0)}


def test_affinity_labels_counted_by_hand():
    index = path_index(2)  # offsets (0,1), (1,-1), (1,0), (1,1); margin 1
    labels = affinity_labels(LABEL, index)
    # "from" grid: rows 0..2, cols 1..3 -> (4 offsets, 3, 3)
    assert labels.bg_pos.shape == (4, 3, 3)
    # Pairs listed by hand, per offset (bg_pos, fg_pos, neg); one (0,1) pair and one (1,1)
    # pair end on the ignored pixel (2, 4) and are in no mask.
    assert labels.bg_pos.sum(dim=(1, 2)).tolist() == [6, 5, 5, 5]
    assert labels.fg_pos.sum(dim=(1, 2)).tolist() == [1, 0, 0, 0]
    assert labels.neg.sum(dim=(1, 2)).tolist() == [1, 4, 4, 3]
    # offset (0, 1) pixel by pixel; grid [y, x] is the pair (y, x+1) -> (y, x+2)
    assert labels.bg_pos[0].tolist() == [[True, True, True], [False, False, True], [True, True, False]]
    assert labels.fg_pos[0].tolist() == [[False, False, False], [True, False, False], [False, False, False]]
    assert labels.neg[0].tolist() == [[False, False, False], [False, True, False], [False, False, False]]
    # the masks never overlap
    total = labels.bg_pos.int() + labels.fg_pos.int() + labels.neg.int()
    assert total.max() == 1 and total.sum() == 4 * 9 - 2


def test_affinity_labels_batched_like_single():
    batch = torch.stack([LABEL, torch.flip(LABEL, dims=[1])])
    index = path_index(2)
    batched = affinity_labels(batch, index)
    for i in range(2):
        single = affinity_labels(batch[i], index)
        for got, want in zip(batched, single):
            assert torch.equal(got[i], want)


def test_path_affinity_worked_by_hand():
    edge = torch.zeros(3, 5)
    edge[1, 2] = 0.6
    edge[0, 3] = 0.2
    aff = path_affinity(edge, path_index(2))  # from grid rows 0..1, cols 1..3
    expected = torch.tensor([
        [[1.0, 0.8, 0.8], [0.4, 0.4, 1.0]],  # (0, 1)
        [[1.0, 0.4, 0.4], [1.0, 0.4, 0.4]],  # (1, -1): path p, p+(0,-1), p+(1,-1), p+(1,0)
        [[1.0, 0.4, 0.8], [1.0, 0.4, 1.0]],  # (1, 0)
        [[0.4, 0.4, 0.8], [0.4, 0.4, 1.0]],  # (1, 1): path p, p+(0,1), p+(1,0), p+(1,1)
    ])
    torch.testing.assert_close(aff, expected)


def test_path_affinity_sees_the_middle_of_a_long_path():
    index = path_index(5)
    edge = torch.zeros(5, 9)
    edge[0, 6] = 0.7
    aff = path_affinity(edge, index)  # margin 4: the only "from" pixel is (0, 4)
    assert aff.shape == (len(index.offsets), 1, 1)
    assert aff[index.offsets.index((0, 4)), 0, 0].item() == pytest.approx(0.3)  # (0,4)->(0,8) passes (0,6)
    assert aff[index.offsets.index((0, 1)), 0, 0].item() == pytest.approx(1.0)  # (0,4)->(0,5) does not
    assert aff[index.offsets.index((4, 0)), 0, 0].item() == pytest.approx(1.0)


def test_path_affinity_gradient_reaches_the_path_max():
    edge = torch.zeros(3, 5, requires_grad=True)
    with torch.no_grad():
        edge[1, 2] = 0.6
    path_affinity(edge, path_index(2))[0, 1, 0].backward()  # pair (1,1) -> (1,2)
    grad = torch.zeros(3, 5)
    grad[1, 2] = -1.0
    torch.testing.assert_close(edge.grad, grad)


def test_boundary_to_affinity_every_pixel_is_a_source():
    aff = boundary_to_affinity(torch.zeros(3, 4), radius=2)
    assert aff.shape == (4, 3, 4)
    # no boundary inside: 1 where the "to" pixel is on the map, 0 where it is off the map
    inside = torch.ones(4, 3, 4)
    inside[0, :, 3] = 0  # (0, 1) from the last column
    inside[1:, 2, :] = 0  # (1, *) from the last row
    inside[1, :, 0] = 0  # (1, -1) from the first column
    inside[3, :, 3] = 0  # (1, 1) from the last column
    torch.testing.assert_close(aff, inside)
    batched = boundary_to_affinity(torch.zeros(2, 1, 3, 4), radius=2)
    assert batched.shape == (2, 1, 4, 3, 4)


def test_pair_difference_of_a_ramp_is_minus_the_offset():
    h, w = 6, 9
    ramp = torch.arange(h * w, dtype=torch.float32).view(h, w)  # value y * w + x
    index = path_index(3)
    diff = pair_difference(ramp[None], index)  # (1, O, h', w')
    assert diff.shape == (1, len(index.offsets), h - 2, w - 4)
    for k, (dy, dx) in enumerate(index.offsets):
        assert torch.all(diff[0, k] == -(dy * w + dx))


def test_too_small_map_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        path_affinity(torch.zeros(3, 8), path_index(5))


def test_downsample_labels_takes_the_cell_centres():
    label = torch.arange(90).view(9, 10)  # value 10 * y + x
    small = downsample_labels(label, 4)
    # rows 2, 6 and 10 -> clamped to 8; cols 2, 6 and 10 -> clamped to 9
    assert small.tolist() == [[22, 26, 29], [62, 66, 69], [82, 86, 89]]
    assert downsample_labels(torch.zeros(2, 8, 8, dtype=torch.long), 4).shape == (2, 2, 2)
