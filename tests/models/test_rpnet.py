"""The classifier: the baseline is exactly the plain CAM net; RPNet's branches follow eq. 3-11."""

import pytest
import torch

from rpnet.losses import classifier_loss
from rpnet.models.backbones import build_backbone
from rpnet.models.rpnet import PrototypeSettings, RPNetClassifier


# The paper's reading, written out: PrototypeSettings has no defaults of its own (ModelConfig is their home).
PAPER = dict(
    levels=("block2", "block4"), group_size=2, alpha=0.3, beta=0.5, sigma=3.0, embed_dim=256, compare="last_level",
    activation_norm="channel", prototype_masks="thinned", prototype_source="embedding", foreground_gain=1.0,
    gaussian_window="3sigma_replicate", reduce_dim=0, non_local=False, role_heads=False, ls_target_scales=(1.0,),
)


def make(prototypes, seed=0, **kw):
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", output_stride=16)
    settings = PrototypeSettings(**{**PAPER, **kw}) if prototypes else None
    return RPNetClassifier(backbone, num_classes=3, prototypes=settings)


def test_baseline_is_exactly_the_plain_cam_classifier():
    model = make(False).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.logits_enhanced is None and out.features_enhanced is None
    f4 = model.backbone(x).block4  # the backbone's own forward, no RPNet code involved
    w = model.classifier.weight  # (3, 512, 1, 1), bias-free
    expected_logits = f4.mean(dim=(2, 3)) @ w.flatten(1).T
    torch.testing.assert_close(out.logits, expected_logits)
    expected_cams = torch.relu(torch.einsum("bdhw,cd->bchw", f4, w.flatten(1)))
    torch.testing.assert_close(model.cams(out.features), expected_cams)
    assert [n for n, _ in model.named_children()] == ["backbone", "classifier", "embeddings"]
    assert len(model.embeddings) == 0


def test_rpnet_original_branch_equals_baseline_with_the_same_weights():
    base, rp = make(False).eval(), make(True).eval()
    rp.backbone.load_state_dict(base.backbone.state_dict())
    rp.classifier.load_state_dict(base.classifier.state_dict())
    x = torch.randn(4, 3, 64, 64)
    torch.testing.assert_close(rp(x).logits, base(x).logits)
    torch.testing.assert_close(rp(x).features, base(x).features)


def test_enhanced_features_are_weighted_copies_of_f_n():
    model = make(True, sigma=None).eval()
    out = model(torch.randn(4, 3, 64, 64))
    assert out.foreground.shape == (4, 1, 4, 4)
    assert out.foreground.min() >= 0 and out.foreground.max() <= 1 + 1e-6  # clipped cosine
    w = out.foreground / out.foreground.amax(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out.features_enhanced, w * out.features, rtol=1e-4, atol=1e-5)  # eq. 10


@pytest.mark.parametrize("levels", [("block2",), ("block3",), ("block4",), ("block2", "block4"), ("block2", "block3", "block4")])
@pytest.mark.parametrize("compare", ["last_level", "same_level"])
def test_every_level_subset_and_comparison_mode_runs(levels, compare):
    model = make(True, levels=levels, compare=compare).train()
    out = model(torch.randn(4, 3, 64, 64))
    assert torch.isfinite(out.logits_enhanced).all()
    expected = set(levels) | ({"block4"} if compare == "last_level" else set())
    assert set(model.embeddings) == expected


def test_new_parameters_are_classifier_and_embeddings_and_block2_is_detached():
    model = make(True).train()
    backbone, new = model.parameter_groups()
    assert {id(p) for p in new} == {id(p) for p in [*model.classifier.parameters(), *model.embeddings.parameters()]}
    x = torch.randn(4, 3, 64, 64)
    out = model(x)
    loss = classifier_loss(out, torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 1], [0, 1, 0]]), model.classifier.weight)
    loss.total.backward()
    assert model.backbone.layer1[0].conv1.weight.grad is None  # IRN: no gradient into block1-2
    assert model.backbone.layer2[0].conv1.weight.grad is None
    assert model.backbone.layer3[0].conv1.weight.grad.abs().sum() > 0
    assert model.embeddings["block4"].weight.grad.abs().sum() > 0  # trained through L_c via eq. 7-10


def test_block2_embedding_is_trained_when_its_prototypes_are_compared():
    # eq. 8's max passes gradient only to the winning prototype; with block2 as the only
    # prototype level every comparison goes through block2's embedding.
    model = make(True, levels=("block2",)).train()
    out = model(torch.randn(4, 3, 64, 64))
    out.logits_enhanced.sum().backward()
    assert model.embeddings["block2"].weight.grad.abs().sum() > 0


def test_group_size_must_divide_the_batch():
    model = make(True, group_size=2)
    with pytest.raises(ValueError, match="groups of 2"):
        model(torch.randn(3, 3, 64, 64))
    assert model.eval()(torch.randn(3, 3, 64, 64), group_size=1).logits_enhanced.shape == (3, 3)


def test_images_only_see_their_own_group():
    model = make(True, sigma=None).eval()
    x = torch.randn(4, 3, 64, 64)
    a = model(x).foreground
    x2 = x.clone()
    x2[2:] = torch.randn(2, 3, 64, 64)  # change the second group only
    b = model(x2).foreground
    torch.testing.assert_close(a[:2], b[:2])


# --------------------------------------------------------------------------- the released code's reading

RELEASED = {**PAPER, "compare": "same_level", "prototype_masks": "full_and_thinned", "prototype_source": "features",
            "foreground_gain": 1.3, "gaussian_window": "5x5_zeros", "reduce_dim": 32, "non_local": True,
            "role_heads": True, "ls_target_scales": (1.0, 0.5, 1.5, 2.0)}


def make_released(seed=0, **kw):
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", output_stride=16, norm="frozen")
    return RPNetClassifier(backbone, num_classes=3, prototypes=PrototypeSettings(**{**RELEASED, **kw}))


def test_settings_come_from_the_config_with_the_variant_resolved():
    from rpnet.config import ModelConfig

    assert PrototypeSettings.from_config(ModelConfig()) == PrototypeSettings(**PAPER)
    released = PrototypeSettings.from_config(ModelConfig(variant="released"))
    assert released == PrototypeSettings(**{**RELEASED, "reduce_dim": 512})
    assert PrototypeSettings.from_config(ModelConfig(gaussian=False)).sigma is None


def test_released_model_layers_and_outputs():
    model = make_released().train()
    assert [n for n, _ in model.named_children()] == [
        "backbone", "reduce", "classifier", "embeddings", "partner_classifiers", "non_local"]
    assert len(model.embeddings) == 0  # prototypes are masked means of the features themselves
    out = model(torch.randn(4, 3, 64, 80))
    assert out.features.shape == (4, 32, 4, 5) and out.cams.shape == out.cams_enhanced.shape == (4, 3, 4, 5)
    backbone, new = model.parameter_groups()
    named = [model.reduce, model.classifier, model.partner_classifiers, model.non_local]
    assert {id(p) for p in new} == {id(p) for m in named for p in m.parameters()}


def test_role_heads_anchor_and_partner_use_their_own_classifier():
    model = make_released(non_local=False).eval()
    x = torch.randn(4, 3, 64, 64)
    before = model(x).logits
    with torch.no_grad():
        model.partner_classifiers[0].weight.mul_(2.0)
    after = model(x).logits
    torch.testing.assert_close(after[0::2], before[0::2])  # anchors: position 0's classifier
    torch.testing.assert_close(after[1::2], 2 * before[1::2])  # partners: position 1's


def test_inference_uses_position_0s_heads_on_images_alone():
    model = make_released().eval()
    with torch.no_grad():
        for block in model.non_local["original"]:
            torch.nn.init.ones_(block.norm.weight)  # a trained-looking block, not the identity
    x = torch.randn(2, 3, 64, 64)
    out = model(x, group_size=1)
    torch.testing.assert_close(model.cam_features(x), out.features)
    torch.testing.assert_close(model.cams(out.features), out.cams)


def test_multi_scale_target_only_while_training():
    model = make_released(role_heads=False, non_local=False).train()
    calls = []
    model.draw_keep = lambda mask, keep, level: calls.append(level) or torch.ones_like(mask)
    out = model(torch.randn(2, 3, 64, 64))
    assert sorted(calls) == ["block2"] * 4 + ["block4"] * 4  # both levels at each of the 4 scales
    out.cams_enhanced.sum().backward()
    assert model.reduce.weight.grad.abs().sum() > 0  # scale 1 carries the gradient
    assert model.eval()(torch.randn(2, 3, 64, 64)).cams_enhanced is None  # no L_s target at inference
    single = make_released(role_heads=False, non_local=False, ls_target_scales=(1.0,)).train()
    assert single(torch.randn(2, 3, 64, 64)).cams_enhanced is None  # the paper's L_s: the loss computes the CAMs


def test_full_and_thinned_masks_with_the_papers_embedding_run():
    model = make(True, prototype_masks="full_and_thinned").train()
    out = model(torch.randn(4, 3, 64, 64))
    assert torch.isfinite(out.logits_enhanced).all() and out.foreground.min() >= 0
