import pytest
import torch

from rpnet.engine.checkpoint import Progress, load_checkpoint, load_model_weights, save_checkpoint, save_model_weights
from rpnet.errors import RpnetError


def test_checkpoint_round_trip_restores_model_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.pt", model, opt, Progress(epoch=2, batch=3, step=11))
    expected_next = torch.rand(3)
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    progress = load_checkpoint(tmp_path / "c.pt", other, other_opt)
    assert progress == Progress(epoch=2, batch=3, step=11)
    assert torch.equal(other.weight, model.weight)
    assert torch.equal(other_opt.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert torch.equal(torch.rand(3), expected_next)  # RNG restored to the moment of saving


def test_weights_are_safetensors_and_strict(tmp_path, umask_022):
    model = torch.nn.Linear(3, 2)
    path = save_model_weights(tmp_path / "m.safetensors", model)
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, then JSON
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like every other output
    other = torch.nn.Linear(3, 2)
    load_model_weights(path, other)
    assert torch.equal(other.weight, model.weight)
    with pytest.raises(RpnetError, match="does not fit"):
        load_model_weights(path, torch.nn.Sequential(torch.nn.Linear(3, 2)))
    with pytest.raises(RpnetError, match="not found"):
        load_model_weights(tmp_path / "none.safetensors", other)
