"""Seeded weights: a fixed stream per key, so a fixture can store a seed instead of the weights."""

import numpy as np
import torch

from rpnet.models.seeded import seeded_array, seeded_state_dict


def test_values_depend_on_key_shape_and_seed_only():
    a = seeded_array("layer.weight", (4, 3, 1, 1), 0)
    np.testing.assert_array_equal(a, seeded_array("layer.weight", (4, 3, 1, 1), 0))
    assert not np.array_equal(a, seeded_array("other.weight", (4, 3, 1, 1), 0))
    assert not np.array_equal(a, seeded_array("layer.weight", (4, 3, 1, 1), 1))
    assert a.dtype == np.float32


def test_kinds_of_entries():
    var = seeded_array("bn.running_var", (1000,), 0)
    assert var.min() >= 0.5 and var.max() < 1.5
    scale = seeded_array("bn.weight", (1000,), 0)
    assert abs(scale.mean() - 1.0) < 0.02
    conv = seeded_array("conv.weight", (64, 128, 3, 3), 0)
    assert abs(conv.std() - np.sqrt(2 / (128 * 9))) < 0.002  # He: sqrt(2 / fan_in)


def test_the_stream_is_numpys_frozen_legacy_one():
    # RandomState([0, crc32("w")]).standard_normal(2) * sqrt(2 / 1); pinned so a change shows here first
    np.testing.assert_allclose(seeded_array("w", (2, 1), 0).ravel(), [0.18368866, 0.11587268], rtol=1e-6)


def test_state_dict_keeps_integer_entries():
    model = torch.nn.BatchNorm2d(3)
    state = seeded_state_dict(model, 0)
    assert state["num_batches_tracked"].dtype == torch.long
    model.load_state_dict(state)
