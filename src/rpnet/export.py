"""Export a trained segmentation model to TorchScript or ONNX, for use without this package.

The exported graph is the model's ``forward``: a normalised image batch (B, 3, H, W) float32,
``(x / 255 - mean) / std`` per RGB channel, in, class logits (B, C, H, W) out (argmax over C is
the label map). Batch size, height and width are free. What a user of the file needs besides
the graph travels inside it, as the JSON of :meth:`rpnet.predict.SegmentationSpec.to_metadata`
(class names, mean, std, architecture):

- TorchScript: the extra file ``rpnet.json``
  (``torch.jit.load(path, _extra_files={"rpnet.json": ""})`` fills it in);
- ONNX: the model's ``metadata_props``, one entry per key.

TorchScript comes from ``torch.jit.trace``; ONNX from ``torch.onnx.export`` with the TorchScript-
based exporter (``dynamo=False``), which needs only the ``onnx`` package, unlike the default
dynamo exporter of recent torch versions, which also needs ``onnxscript``
(``pip install rpnet[export]`` installs onnx and onnxruntime; the test extra ``dev`` has them too).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError, RpnetError
from .io import atomic_path
from .predict import SegmentationSpec, load_segmentation_model

log = logging.getLogger(__name__)

SAMPLE_SIZE = 64  # side of the example input the graph is traced with; any size works afterwards
ONNX_OPSET = 17  # opset 17 (ONNX 1.12, 2022) is read by every onnxruntime of the last years
INPUT_NAME, OUTPUT_NAME = "image", "logits"
EXTRA_FILE = "rpnet.json"


def sample_input(batch: int = 1, size: int = SAMPLE_SIZE, seed: int = 0) -> torch.Tensor:
    """A seeded random normalised image batch (batch, 3, size, size) to trace and check with."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


def export_torchscript(model: nn.Module, spec: SegmentationSpec, out: Path) -> Path:
    """Trace ``model`` (eval mode) and save it to ``out`` with the spec as ``rpnet.json``."""
    with torch.no_grad(), warnings.catch_warnings(), atomic_path(out) as tmp:
        # The tracer warns about shape arithmetic in bilinear upsampling; sizes are recorded as graph ops.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Recent torch marks TorchScript deprecated; it is still what C++ (libtorch) deployments load.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model.eval(), sample_input(), check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={EXTRA_FILE: json.dumps(spec.to_metadata())})
    return out


def export_onnx(model: nn.Module, spec: SegmentationSpec, out: Path) -> Path:
    """Export ``model`` (eval mode) to ONNX at ``out``, with dynamic batch, height and width."""
    try:
        import onnx
    except ImportError:
        raise RpnetError("ONNX export needs the onnx package: pip install onnx "
                         "(or: pip install rpnet[export])") from None
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer warnings
        torch.onnx.export(model.eval(), (sample_input(),), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic})
        proto = onnx.load(str(tmp))
        for key, value in spec.to_metadata().items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))
    return out


EXPORTERS: dict[str, Callable[[nn.Module, SegmentationSpec, Path], Path]] = {
    "torchscript": export_torchscript,
    "onnx": export_onnx,
}


def export_model(weights: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the ``train-seg`` weights file ``weights`` as ``fmt`` (a key of :data:`EXPORTERS`) to ``out``."""
    if fmt not in EXPORTERS:
        raise ConfigError(f"unknown export format {fmt!r}; choose from {sorted(EXPORTERS)}")
    model, spec = load_segmentation_model(weights)
    out = EXPORTERS[fmt](model, spec, Path(out))
    log.info("export: %s (%s on %s, %d classes) written to %s", fmt, spec.architecture, spec.backbone,
             spec.num_classes, out)
    return out


__all__ = ["EXPORTERS", "export_model", "export_torchscript", "export_onnx", "sample_input"]
