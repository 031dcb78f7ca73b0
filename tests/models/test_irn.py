import pytest
import torch

from rpnet.models.backbones import build_backbone
from rpnet.models.irn import IRNet, level_strides


def _irn(name: str = "resnet18", output_stride: int = 16, freeze: bool = True) -> IRNet:
    torch.manual_seed(0)
    return IRNet(build_backbone(name, output_stride=output_stride, norm="frozen"), freeze_backbone=freeze)


def test_level_strides():
    assert level_strides(16) == {"stem": 4, "block1": 4, "block2": 8, "block3": 16, "block4": 16}
    assert level_strides(8) == {"stem": 4, "block1": 4, "block2": 8, "block3": 8, "block4": 8}
    assert level_strides(32)["block4"] == 32


@pytest.mark.parametrize("name, output_stride", [("resnet18", 16), ("resnet18", 8), ("resnet18", 32),
                                                 ("resnet50", 16)])
def test_outputs_are_at_stride_4(name, output_stride):
    net = _irn(name, output_stride)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 38, 42))
    # ceil(38 / 4) = 10, ceil(42 / 4) = 11, whatever the input is divisible by
    assert out.edge.shape == (2, 1, 10, 11)
    assert out.displacement.shape == (2, 2, 10, 11)


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval():
    net = _irn()
    net.train()
    assert not net.backbone.training and net.edge_out.training
    out = net(torch.randn(2, 3, 24, 24))
    (out.edge.sum() + out.displacement.sum()).backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert net.edge_out.weight.grad is not None and net.disp_out.weight.grad is not None
    groups = net.parameter_groups()
    assert groups.backbone == []
    boundary, displacement = {id(p) for p in groups.boundary}, {id(p) for p in groups.displacement}
    assert boundary and displacement and not boundary & displacement
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert boundary | displacement == trainable


def test_unfrozen_backbone_is_trained():
    net = _irn(freeze=False)
    net.train()
    assert net.backbone.training
    net(torch.randn(2, 3, 24, 24)).edge.sum().backward()
    assert net.backbone.layer4[0].conv1.weight.grad is not None
    assert len(net.parameter_groups().backbone) > 0


def test_displacement_mean_is_subtracted_in_eval_only():
    net = _irn()
    net.displacement_mean.copy_(torch.tensor([1.0, 2.0]))
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        train_out = net.train()(x)
        eval_out = net.eval()(x)
    torch.testing.assert_close(eval_out.edge, train_out.edge)
    diff = train_out.displacement - eval_out.displacement
    torch.testing.assert_close(diff, torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand_as(diff))


def test_predict_gives_flip_consistent_probabilities():
    net = _irn().eval()
    image = torch.randn(3, 24, 32)
    pred = net.predict(image)
    assert pred.edge.shape == (1, 6, 8) and pred.displacement.shape == (2, 6, 8)
    assert pred.edge.min() > 0 and pred.edge.max() < 1
    # averaging the logits of an image and its mirror image makes the map mirror-symmetric in
    # the image: the prediction for the mirrored image is the mirrored prediction
    torch.testing.assert_close(net.predict(image.flip(-1)).edge, pred.edge.flip(-1))
    padded = net.predict(torch.randn(3, 21, 29), pad_to=48)
    assert padded.edge.shape == (1, 6, 8)


def test_boundary_prior_sets_the_initial_boundary_probability():
    torch.manual_seed(0)
    net = IRNet(build_backbone("resnet18", norm="frozen"), boundary_prior=0.05)
    # logit(0.05) = ln(0.05 / 0.95) = -2.9444
    assert net.edge_out.bias.item() == pytest.approx(-2.9444, abs=1e-4)
    with torch.no_grad():
        net.edge_out.weight.zero_()  # the bias alone: every pixel starts at the prior
        edge = torch.sigmoid(net.eval()(torch.randn(1, 3, 32, 32)).edge)
    assert torch.allclose(edge, torch.full_like(edge, 0.05))
    with pytest.raises(ValueError, match="boundary_prior"):
        IRNet(build_backbone("resnet18", norm="frozen"), boundary_prior=0.0)
