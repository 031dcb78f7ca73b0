"""Device choice and the GPU memory layout switch."""

import pytest
import torch
from torch import nn

from rpnet.errors import ConfigError
from rpnet.runtime import resolve_device, to_memory_format, use_channels_last


def test_cpu_is_cpu_and_cuda_without_a_gpu_is_a_config_error(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device=auto or cpu"):
        resolve_device("cuda")


def test_channels_last_only_on_cuda_and_only_when_asked():
    assert use_channels_last(torch.device("cuda", 0), True)
    assert not use_channels_last(torch.device("cuda", 0), False)
    assert not use_channels_last(torch.device("cpu"), True)


def test_memory_format_changes_strides_not_values():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    y = to_memory_format(x, True)
    assert y.stride() == (60, 1, 15, 3) and torch.equal(y, x)  # NHWC: channels vary fastest
    assert to_memory_format(x, False) is x
    conv = to_memory_format(nn.Conv2d(3, 4, 3), True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
