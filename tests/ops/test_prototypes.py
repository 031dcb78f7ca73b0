"""Eq. 3-10 on tiny tensors with values worked out by hand."""

import math

import torch

from rpnet.ops import prototypes as P


def test_normalized_activation_divides_relu_by_channel_peak():
    f = torch.tensor([[[[-1.0, 2.0], [4.0, 1.0]], [[0.5, -3.0], [0.25, 0.0]]]])  # (1, 2, 2, 2)
    a = P.normalized_activation(f, eps=0.0)
    expected = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]], [[1.0, 0.0], [0.5, 0.0]]]])
    torch.testing.assert_close(a, expected)


def test_confidence_is_channel_max():
    a = torch.tensor([[[[0.1, 0.9]], [[0.7, 0.2]]]])  # (1, 2, 1, 2)
    torch.testing.assert_close(P.confidence_map(a), torch.tensor([[[[0.7, 0.9]]]]))


def test_prototype_is_masked_mean():
    emb = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)  # ch0: 0 1 2 3, ch1: 4 5 6 7
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    proto, valid = P.region_prototypes(emb, mask, eps=0.0)
    # ch0: (0 + 2 + 3) / 3, ch1: (4 + 6 + 7) / 3
    torch.testing.assert_close(proto, torch.tensor([[5 / 3, 17 / 3]]))
    assert valid.tolist() == [True]


def test_empty_mask_gives_no_prototype_and_no_nan():
    emb = torch.rand(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[1, 0, 0, 0] = 1
    proto, valid = P.region_prototypes(emb, mask)
    assert valid.tolist() == [False, True]
    assert torch.isfinite(proto).all()
    torch.testing.assert_close(proto[0], torch.zeros(3))


def test_region_identical_to_prototype_scores_one():
    emb = torch.zeros(2, 3, 1, 2)
    emb[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0])  # image 0, position 0
    emb[1, :, 0, 1] = torch.tensor([2.0, 4.0, 6.0])  # image 1: same direction, twice as long
    emb[1, :, 0, 0] = torch.tensor([-1.0, 0.0, 0.0])
    protos = torch.tensor([[[1.0, 2.0, 3.0]]])  # one group (K=2), one prototype
    sim = P.region_similarity(emb, protos, torch.tensor([[True]]), group_size=2)
    assert sim.shape == (2, 1, 1, 2)
    torch.testing.assert_close(sim[0, 0, 0, 0], torch.tensor(1.0))
    torch.testing.assert_close(sim[1, 0, 0, 1], torch.tensor(1.0))
    # cos(p, (-1,0,0)) = -1/sqrt(14) < 0 is clipped to 0 (eq. 8 followed by the clip of docs/method.md)
    assert sim[1, 0, 0, 0].item() == 0.0


def test_similarity_takes_max_over_all_group_prototypes():
    emb = torch.tensor([[[[1.0]], [[0.0]]], [[[0.6]], [[0.8]]]])  # B=2, D=2, 1x1
    protos = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # group of 2 images, prototypes e_x and e_y
    sim = P.region_similarity(emb, protos, torch.tensor([[True, True]]), group_size=2)
    torch.testing.assert_close(sim.flatten(), torch.tensor([1.0, 0.8]))
    # an invalid prototype is ignored
    sim = P.region_similarity(emb, protos, torch.tensor([[False, True]]), group_size=2)
    torch.testing.assert_close(sim.flatten(), torch.tensor([0.0, 0.8]))


def test_k1_uses_only_the_images_own_prototypes():
    # two images, K=1: image 1's prototype must not reach image 0
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (B=2, D=2), image 0 -> e_x, image 1 -> e_y
    valid = torch.tensor([True, True])
    gp, gv = P.group_prototypes(protos[None], valid[None], group_size=1)
    assert gp.shape == (2, 1, 2)
    emb = torch.tensor([[[[0.0]], [[1.0]]], [[[1.0]], [[0.0]]]])  # image 0 looks like e_y, image 1 like e_x
    sim = P.region_similarity(emb, gp, gv, group_size=1)
    torch.testing.assert_close(sim.flatten(), torch.tensor([0.0, 0.0]))
    gp2, gv2 = P.group_prototypes(protos[None], valid[None], group_size=2)
    sim2 = P.region_similarity(emb, gp2, gv2, group_size=2)
    torch.testing.assert_close(sim2.flatten(), torch.tensor([1.0, 1.0]))


def test_group_prototypes_layout_levels_and_images():
    # L=2 levels, B=4 images, K=2 -> 2 groups of 4 prototypes
    protos = torch.arange(8, dtype=torch.float32).reshape(2, 4, 1)  # value = level*4 + image
    valid = torch.ones(2, 4, dtype=torch.bool)
    gp, gv = P.group_prototypes(protos, valid, group_size=2)
    assert sorted(gp[0].flatten().tolist()) == [0, 1, 4, 5]
    assert sorted(gp[1].flatten().tolist()) == [2, 3, 6, 7]


def test_bernoulli_drop_keeps_about_beta_of_confident_positions():
    conf = torch.zeros(1, 1, 200, 200)
    conf[..., :100, :] = 0.9  # 20,000 confident positions
    gen = torch.Generator().manual_seed(0)
    mask = P.prototype_mask(conf, alpha=0.3, keep=0.5, generator=gen)
    assert mask[..., 100:, :].sum() == 0  # never outside the confident region
    kept = mask.sum().item() / 20000
    assert abs(kept - 0.5) < 0.02  # binomial sd = 0.0035
    assert P.prototype_mask(conf, alpha=0.3, keep=None).sum().item() == 20000


def test_threshold_is_strict():
    conf = torch.tensor([[[[0.3, 0.31, 0.29]]]])
    assert P.prototype_mask(conf, alpha=0.3, keep=None).flatten().tolist() == [0.0, 1.0, 0.0]


def test_gaussian_kernel_matches_eq9():
    sigma = 1.5
    k = P.gaussian_kernel1d(sigma)
    r = math.ceil(3 * sigma)
    assert k.numel() == 2 * r + 1
    g = [math.exp(-(t * t) / (2 * sigma * sigma)) for t in range(-r, r + 1)]
    torch.testing.assert_close(k, torch.tensor(g) / sum(g))


def test_gaussian_smooth_keeps_constants_and_spreads_a_peak():
    const = torch.full((1, 1, 5, 7), 0.4)
    torch.testing.assert_close(P.gaussian_smooth(const, 3.0), const)  # replicate padding: no dark edges
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    y = P.gaussian_smooth(x, 1.0)
    k = P.gaussian_kernel1d(1.0)
    torch.testing.assert_close(y[0, 0, 4, 4], k[3] * k[3])  # centre of the 2-D kernel
    torch.testing.assert_close(y[0, 0, 4, 5], k[3] * k[4])
    torch.testing.assert_close(y.sum(), torch.tensor(1.0))


def test_enhancement_weights_are_max_normalised_then_smoothed():
    f = torch.tensor([[[[0.2, 0.4], [0.1, 0.0]]]])
    w = P.enhancement_weights(f, sigma=None, eps=0.0)
    torch.testing.assert_close(w, torch.tensor([[[[0.5, 1.0], [0.25, 0.0]]]]))
    assert P.enhancement_weights(torch.zeros(1, 1, 3, 3), sigma=3.0).abs().sum() == 0


def test_global_normalisation_divides_by_the_single_peak():
    f = torch.tensor([[[[1.0, 2.0]], [[4.0, -1.0]]]])  # (1, 2, 1, 2), peak 4
    a = P.normalized_activation(f, per_channel=False, eps=0.0)
    torch.testing.assert_close(a, torch.tensor([[[[0.25, 0.5]], [[1.0, 0.0]]]]))
    # the confidence (eq. 4) is then a fraction of the image's peak: 0.5 < alpha=0.6 at the right position
    assert P.prototype_mask(P.confidence_map(a), 0.6, None).flatten().tolist() == [1.0, 0.0]


# --------------------------------------------------------------------------- the released code's reading


def test_feature_confident_mask_any_channel_at_alpha_of_its_own_peak():
    # ch0 [1, 2, 4] / 4 = [0.25, 0.5, 1]; ch1 [0.5, 2, 2] / 2 = [0.25, 1, 1]; >= 0.3 in any channel: [0, 1, 1]
    f = torch.tensor([[[[1.0, 2.0, 4.0]], [[0.5, 2.0, 2.0]]]])  # (1, 2, 1, 3)
    torch.testing.assert_close(P.feature_confident_mask(f, 0.3, eps=0.0), torch.tensor([[[[0.0, 1.0, 1.0]]]]))
    # >= rather than >: 0.25 passes at alpha 0.25
    torch.testing.assert_close(P.feature_confident_mask(f, 0.25, eps=0.0), torch.ones(1, 1, 1, 3))


def test_feature_confident_mask_has_no_relu_so_an_all_negative_channel_passes_everywhere():
    # [-1, -2, -0.5] / -0.5 = [2, 4, 1]: every ratio is >= 0.3 (the released code's behaviour, kept)
    f = torch.tensor([[[[-1.0, -2.0, -0.5]]]])
    torch.testing.assert_close(P.feature_confident_mask(f, 0.3, eps=0.0), torch.ones(1, 1, 1, 3))


def test_region_similarity_unclipped_keeps_negative_cosines():
    emb = torch.tensor([[[[1.0, -1.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2): directions (1, 0) and (-1, 0)
    protos, valid = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[True]])  # one prototype (1, 0)
    # cos = [1, -1]; eq. 8 as the paper prints it clips at 0, the released code does not
    torch.testing.assert_close(P.region_similarity(emb, protos, valid, 1), torch.tensor([[[[1.0, 0.0]]]]))
    torch.testing.assert_close(P.region_similarity(emb, protos, valid, 1, clip=False), torch.tensor([[[[1.0, -1.0]]]]))


def test_gaussian_window_is_a_normalised_kernel_with_zero_padding():
    # size 3, sigma 1: g = [e^-0.5, 1, e^-0.5] = [0.60653, 1, 0.60653], sum 2.21306.
    # A single 1 on a 3 x 3 map gives the kernel back: outer(g, g) / 2.21306^2.
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    g = torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)]) / (1 + 2 * math.exp(-0.5))
    torch.testing.assert_close(P.gaussian_smooth_window(x, 1.0, size=3), torch.outer(g, g).view(1, 1, 3, 3))
    # a 1 x 1 map of ones keeps only the centre weight (zeros all round): 1 / 2.21306^2 = 0.20418
    assert abs(P.gaussian_smooth_window(torch.ones(1, 1, 1, 1), 1.0, size=3).item() - 0.20418) < 1e-4
    # the released 5 x 5, sigma 3: g = [e^-4/18, e^-1/18, 1, ...] = [0.80074, 0.94596, 1, ...], sum 4.49340
    assert abs(P.gaussian_smooth_window(torch.ones(1, 1, 1, 1), 3.0).item() - 1 / 4.49340**2) < 1e-5


def test_enhancement_gain_scales_the_normalised_map_before_the_filter():
    f = torch.tensor([[[[0.5, 1.0]]]])
    # F / max F = [0.5, 1]; times 1.3 = [0.65, 1.3]
    torch.testing.assert_close(P.enhancement_weights(f, None, eps=0.0, gain=1.3), torch.tensor([[[[0.65, 1.3]]]]))
    w = P.enhancement_weights(torch.ones(1, 1, 1, 1), 3.0, eps=0.0, gain=1.3, window="5x5_zeros")
    assert abs(w.item() - 1.3 / 4.49340**2) < 1e-5  # the gain, then the 5 x 5 window's centre weight
