"""rpnet.export: the exported graphs give PyTorch's logits, at a size other than the traced one."""

import json

import numpy as np
import pytest
import torch

from rpnet.cli import main
from rpnet.errors import ConfigError
from rpnet.export import export_model, sample_input
from rpnet.predict import SegmentationSpec, build_model, load_segmentation_model, save_segmentation_weights

SPEC = SegmentationSpec("deeplab_largefov", "resnet18", 16, ("background", "a", "b"))
TOLERANCE = 1e-4
CHECK_SIZE = (2, 48, 80)  # batch, height, width: not the traced 1 x 64 x 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_segmentation_weights(tmp_path_factory.mktemp("seg") / "model.safetensors", build_model(SPEC), SPEC)


def reference(weights):
    model, _ = load_segmentation_model(weights)
    x = torch.randn(CHECK_SIZE[0], 3, *CHECK_SIZE[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_pytorch_and_carries_the_spec(weights, tmp_path, umask_022):
    out = export_model(weights, "torchscript", tmp_path / "model.pt")
    assert out.stat().st_mode & 0o777 == 0o644
    extra = {"rpnet.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    x, expected = reference(weights)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected, atol=TOLERANCE, rtol=0)
    assert json.loads(extra["rpnet.json"])["class_names"] == json.dumps(list(SPEC.class_names))


def test_onnx_matches_pytorch_in_onnxruntime(weights, tmp_path, umask_022):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install rpnet[export])")
    ort = pytest.importorskip("onnxruntime",
                              reason="checking the ONNX file needs onnxruntime (pip install rpnet[export])")
    import onnx

    out = export_model(weights, "onnx", tmp_path / "model.onnx")
    assert out.stat().st_mode & 0o777 == 0o644
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x, expected = reference(weights)
    (logits,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(logits, expected.numpy(), atol=TOLERANCE, rtol=0)
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["class_names"]) == list(SPEC.class_names)


def test_unknown_format_and_the_command_line(weights, tmp_path, capsys):
    with pytest.raises(ConfigError, match="torchscript"):
        export_model(weights, "tflite", tmp_path / "m")
    out = tmp_path / "cli.pt"
    assert main(["export", "--weights", str(weights), "--format", "torchscript", "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out


def test_sample_input_is_seeded():
    assert torch.equal(sample_input(), sample_input()) and sample_input(2, 8).shape == (2, 3, 8, 8)
