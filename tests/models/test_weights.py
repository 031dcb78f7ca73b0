"""Weights files: formats, checkpoint unwrapping, strict key checks, round trips."""

from __future__ import annotations

import json
import struct

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

from rpnet.errors import ConfigError
from rpnet.models.backbones import BACKBONES, build_backbone
from rpnet.models.weights import (
    check_state_dict,
    load_backbone_weights,
    read_weights,
    save_safetensors,
    save_weights,
)

FORMATS = (".pth", ".safetensors")
INPUT = (1, 3, 32, 32)
# The backbones over 40M parameters: writing and reading their files twice takes
# seconds each on a small CI machine, so their round trips are marked slow.
HEAVY = {"resnet101", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "convnext_small", "convnext_base"}
ROUND_TRIP_CASES = [pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name
                    for name in sorted(BACKBONES)]


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("resnet18", output_stride=32).eval()


def _randomise_norm_statistics(model: nn.Module) -> None:
    # Fresh batch norms hold mean 0 / var 1; other values show that buffers travel too.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def _zero_(model: nn.Module) -> None:
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.zero_()


@pytest.mark.parametrize("name", ROUND_TRIP_CASES)
def test_round_trip_through_both_formats(name, tmp_path):
    # With the 1000-class head, as an ImageNet checkpoint is; loading skips "fc.".
    torch.manual_seed(0)
    model = BACKBONES[name]().eval()
    _randomise_norm_statistics(model)
    x = torch.randn(INPUT)
    with torch.no_grad():
        expected = model(x)
    for suffix in FORMATS:
        save_weights(model.state_dict(), tmp_path / f"w{suffix}")
    for suffix in FORMATS:
        _zero_(model)  # every tensor the file fails to restore would stay zero
        load_backbone_weights(model, tmp_path / f"w{suffix}")
        with torch.no_grad():
            got = model(x)
        for g, e in zip(got, expected):
            assert torch.equal(g, e), suffix


def test_read_weights_formats_keep_names_dtypes_and_values(tmp_path):
    state = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.num_batches_tracked": torch.tensor(7)}
    for suffix in (".pth", ".pt", ".safetensors"):
        path = save_weights(state, tmp_path / f"w{suffix}")
        got = read_weights(path)
        assert sorted(got) == sorted(state)
        for k in state:
            assert got[k].dtype == state[k].dtype
            assert torch.equal(got[k], state[k])
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary files left


def test_save_weights_format_follows_suffix(tmp_path, umask_022):
    state = {"w": torch.ones(2)}
    safetensors.torch.load_file(str(save_weights(state, tmp_path / "a.safetensors")))
    assert isinstance(torch.load(save_weights(state, tmp_path / "a.pth"), weights_only=True), dict)
    for name in ("a.safetensors", "a.pth"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    with pytest.raises(ConfigError, match=r"a\.npz"):
        save_weights(state, tmp_path / "a.npz")


def test_read_weights_unwraps_checkpoints_and_ddp_prefix(tmp_path):
    inner = {"module.conv1.weight": torch.ones(1), "module.fc.bias": torch.zeros(2)}
    for key in ("state_dict", "model"):
        path = tmp_path / f"{key}.pth"
        torch.save({key: inner, "epoch": 3}, path)
        got = read_weights(path)
        assert sorted(got) == ["conv1.weight", "fc.bias"]
        assert torch.equal(got["conv1.weight"], torch.ones(1))


def test_read_weights_errors_name_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(ConfigError, match="resnet50.pth"):
        read_weights(missing)
    with pytest.raises(ConfigError, match="resnet50.pth"):
        build_backbone("resnet18", pretrained=missing)

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a tensor file")
    with pytest.raises(ConfigError, match="corrupt.safetensors"):
        read_weights(corrupt)

    unknown = tmp_path / "weights.h5"
    unknown.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"weights\.h5.*\.safetensors"):
        read_weights(unknown)

    not_a_state_dict = tmp_path / "mixed.pth"
    torch.save({"epoch": 3, "w": torch.ones(1)}, not_a_state_dict)
    with pytest.raises(ConfigError, match="mixed.pth.*epoch"):
        read_weights(not_a_state_dict)


def test_wrong_shape_is_listed_with_both_shapes(resnet18, tmp_path):
    state = dict(resnet18.state_dict())
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    path = save_weights(state, tmp_path / "w.safetensors")
    with pytest.raises(ConfigError) as err:
        load_backbone_weights(resnet18, path)
    message = str(err.value)
    assert "w.safetensors" in message
    assert "layer2.0.conv1.weight (file (128, 64, 1, 1), model (128, 64, 3, 3))" in message


def test_missing_and_unexpected_keys_are_listed(resnet18, tmp_path):
    reference = resnet18.layer1[0].conv1.weight.clone()
    state = dict(resnet18.state_dict())
    state = {k: torch.full_like(v, 0.5) for k, v in state.items()}
    del state["layer3.1.bn2.running_var"], state["layer4.0.downsample.0.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    path = save_weights(state, tmp_path / "w.pth")
    with pytest.raises(ConfigError) as err:
        load_backbone_weights(resnet18, path)
    message = str(err.value)
    assert "missing keys: layer3.1.bn2.running_var, layer4.0.downsample.0.weight" in message
    assert "unexpected keys: layer5.0.conv1.weight" in message
    # Refused before anything was copied.
    assert torch.equal(resnet18.layer1[0].conv1.weight, reference)


def test_fc_keys_ignored_but_other_prefixes_are_not(resnet18, tmp_path):
    state = dict(resnet18.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = save_weights(state, tmp_path / "w.pth")
    load_backbone_weights(resnet18, path)
    with pytest.raises(ConfigError, match="unexpected keys: fc.bias, fc.weight"):
        load_backbone_weights(resnet18, path, ignore=())


def test_ignored_prefixes_are_skipped_on_both_sides():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    state = {"0.weight": torch.zeros(2, 2), "0.bias": torch.zeros(2)}
    assert check_state_dict(model, state, ignore=("1.",)) == []
    assert check_state_dict(model, state) == ["missing keys: 1.bias, 1.weight"]


def test_missing_batch_counter_is_accepted(resnet18, tmp_path):
    # Checkpoints saved before PyTorch 0.4.1 (torchvision's first ResNets) lack it.
    state = {k: v for k, v in resnet18.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_backbone_weights(resnet18, save_weights(state, tmp_path / "old.pth"))
    assert resnet18.bn1.num_batches_tracked.item() == 0


def test_long_listings_are_cut(tmp_path):
    model = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(25)])
    path = save_weights({}, tmp_path / "empty.safetensors")
    with pytest.raises(ConfigError, match=r"missing keys: 0\.weight, .* and 5 more"):
        load_backbone_weights(model, path)


def every_kind_of_tensor() -> dict[str, torch.Tensor]:
    """Items of 8, 4, 2 and 1 bytes, a scalar, an empty and a non-contiguous tensor."""
    return {
        "z.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),  # a transposed view
        "bn.num_batches_tracked": torch.tensor(7),  # 0-d int64
        "half": torch.tensor([1.5, -2.0, 3.25], dtype=torch.float16),
        "brain": torch.tensor([0.5, 1.0, -3.0], dtype=torch.bfloat16),
        "mask": torch.tensor([True, False, True]),
        "bytes": torch.arange(5, dtype=torch.uint8),
        "empty": torch.zeros(0, 4),
        "double": torch.tensor([1e-300], dtype=torch.float64),
    }


# Several keys, as train-seg writes them; the safetensors library writes such a map in a new order each time.
METADATA = {"rpnet_format": "rpnet.segmentation.v1", "architecture": "deeplabv3plus", "backbone": "resnet50",
            "output_stride": "16", "class_names": '["background", "chat", "été"]', "mean": "[0.485, 0.456, 0.406]"}


def reversed_dict(d: dict) -> dict:
    return {k: d[k] for k in reversed(list(d))}


def test_safetensors_bytes_depend_on_the_contents_only(tmp_path):
    tensors = every_kind_of_tensor()
    first = save_safetensors(tmp_path / "a.safetensors", tensors, METADATA).read_bytes()
    for i in range(3):  # filled in the other order, and saved again
        again = save_safetensors(tmp_path / f"b{i}.safetensors", reversed_dict(tensors), reversed_dict(METADATA))
        assert again.read_bytes() == first
    assert save_weights(tensors, tmp_path / "c.safetensors").read_bytes() == \
        save_safetensors(tmp_path / "d.safetensors", reversed_dict(tensors)).read_bytes()


def test_safetensors_round_trip_through_the_library(tmp_path):
    tensors = every_kind_of_tensor()
    path = save_safetensors(tmp_path / "w.safetensors", tensors, METADATA)
    loaded = safetensors.torch.load_file(str(path))
    assert sorted(loaded) == sorted(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata() == METADATA
    with safe_open(str(save_safetensors(tmp_path / "plain.safetensors", tensors)), framework="pt") as fh:
        assert fh.metadata() is None  # no metadata given, none written (as the library does)


def test_safetensors_layout_is_aligned_and_complete(tmp_path):
    tensors = every_kind_of_tensor()
    data = save_safetensors(tmp_path / "w.safetensors", tensors, METADATA).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    start = 8 + length
    assert start % 8 == 0 and list(header)[0] == "__metadata__"
    spans = sorted(entry["data_offsets"] for name, entry in header.items() if name != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - start  # the data, no gap at either end
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # and none between tensors
    for name, tensor in tensors.items():
        assert (start + header[name]["data_offsets"][0]) % tensor.element_size() == 0, name


def test_safetensors_refuses_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="output_stride"):
        save_safetensors(tmp_path / "w.safetensors", {"w": torch.ones(1)}, {"output_stride": 16})
    with pytest.raises(TypeError, match="complex"):
        save_safetensors(tmp_path / "w.safetensors", {"w": torch.ones(1, dtype=torch.complex64)})
    assert not list(tmp_path.iterdir())  # nothing half-written
