"""`model.variant: released` reproduces the authors' released RPNet code (to 1e-4).

tests/fixtures/released_parity.npz holds, for two widths of the block4 reduction ("wide": their 512
channels; "narrow": 2 channels, where the confident mask covers about half the positions), the tags
of two pairs of seeded random images (the images are regenerated from the seed, rpnet.models.seeded.
seeded_images), the 0/1 dropout draws the released code used, and its
outputs: the foreground map F, both branches' logits, the original CAMs, L_s's multi-scale enhanced
CAMs, and the loss terms of its training step. benchmarks/released_parity.py wrote it by running
the released code (not part of this repository) on the same seeded weights; the weights are
regenerated here from the seed (rpnet.models.seeded), and their sums are checked first.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from rpnet.config import ModelConfig
from rpnet.losses import classifier_loss
from rpnet.models.backbones.resnet import Bottleneck, FrozenBatchNorm2d, ResNet
from rpnet.models.rpnet import PrototypeSettings, RPNetClassifier
from rpnet.models.seeded import seeded_images, seeded_state_dict

FIXTURE = Path(__file__).parent.parent / "fixtures" / "released_parity.npz"
TOLERANCE = 1e-4
CASES = ("wide", "narrow")


def load_case(case):
    """One case of the fixture, with its input images regenerated from its seed (they are not stored)."""
    with np.load(FIXTURE, allow_pickle=False) as arrays:
        fixture = {k.removeprefix(f"{case}_"): arrays[k] for k in arrays.files if k.startswith(f"{case}_")}
    fixture["images"] = seeded_images(int(fixture["seed"]), tuple(int(n) for n in fixture["image_shape"]))
    return fixture


def build(fixture):
    mid = int(fixture["mid"])
    backbone = ResNet(Bottleneck, tuple(int(n) for n in fixture["layers"]), num_classes=None,
                      width_per_group=int(fixture["width_per_group"]), output_stride=16,
                      norm_layer=FrozenBatchNorm2d, freeze_stem=True)
    config = ModelConfig(variant="released") if mid == 512 else ModelConfig(variant="released", reduce_dim=mid)
    model = RPNetClassifier(backbone, 20, PrototypeSettings.from_config(config), detach_block2=True)
    state = seeded_state_dict(model, int(fixture["seed"]))
    sums = np.array([float(v.double().sum()) for v in state.values() if v.is_floating_point()])
    np.testing.assert_allclose(sums, fixture["weight_sums"], rtol=1e-6, atol=1e-6,
                               err_msg="the seeded weights differ from those the fixture was made with")
    model.load_state_dict(state)
    return model.train()  # the released code's modules are always in training mode


def feed_draws(model, fixture):
    """Replace eq. 6's Bernoulli draws by the released run's, per level in forward order (scales 1, .5, 1.5, 2)."""
    calls = {"block2": 0, "block4": 0}

    def draw_keep(mask, keep, level):
        s = calls[level]
        calls[level] += 1
        z = np.stack([fixture[f"keep_{s}_{level}_0"], fixture[f"keep_{s}_{level}_1"]], axis=1)  # (pairs, 2, 1, h, w)
        z = torch.from_numpy(z.reshape((-1,) + z.shape[2:]).astype(np.float32))
        assert z.shape == mask.shape
        return z

    model.draw_keep = draw_keep
    return calls


@pytest.fixture(scope="module", params=CASES)
def run(request):
    fixture = load_case(request.param)
    model = build(fixture)
    calls = feed_draws(model, fixture)
    images = torch.from_numpy(fixture["images"]).flatten(0, 1)  # (pairs * 2, 3, H, W): anchor, partner, ...
    tags = torch.from_numpy(fixture["tags"]).flatten(0, 1)
    out = model(images)
    assert calls == {"block2": 4, "block4": 4}  # one draw per level at each of the four scales
    return fixture, model, out, tags


def pairs(t):
    return t.detach().reshape((-1, 2) + t.shape[1:]).numpy()


@pytest.mark.parametrize("name", ["foreground", "logits", "logits_enhanced", "cams", "cams_enhanced"])
def test_outputs_match_the_released_code(run, name):
    fixture, _, out, _ = run
    np.testing.assert_allclose(pairs(getattr(out, name)), fixture[name], rtol=0, atol=TOLERANCE)


def test_loss_terms_match_the_released_code(run):
    fixture, model, out, tags = run
    lc_args = dict(lc_on_original=True, lc_on_enhanced=False)
    for position in (0, 1):  # their loss1 / loss_x are the anchors', loss2 / loss_y the partners'
        half = type(out)(*[None if t is None else t[position::2] for t in out])
        terms = classifier_loss(half, tags[position::2], model.classifier.weight, **lc_args)
        assert abs(terms.cls.item() - fixture["loss_lc"][position]) < TOLERANCE
        assert abs(10 * terms.consistency.item() - fixture["loss_ls"][position]) < TOLERANCE
    total = classifier_loss(out, tags, model.classifier.weight, **lc_args).total
    assert abs(2 * total.item() - float(fixture["loss_total"])) < TOLERANCE  # theirs sums over the pair
