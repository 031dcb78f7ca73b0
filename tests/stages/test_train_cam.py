"""train-cam end to end on a tiny synthetic set: outputs, determinism, the baseline switch."""

import torch
import yaml
from safetensors.torch import load_file

from rpnet.config import load_config
from rpnet.io import read_jsonl
from rpnet.stages import train_cam


def test_writes_weights_log_and_resolved_config(tiny_cfg):
    cfg = tiny_cfg("train_cam.max_steps=2")
    weights = train_cam.run(cfg)
    out = weights.parent
    assert weights.name == "model.safetensors" and (out / "last.pt").exists()
    log = read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2] and {"l_c", "l_s", "lr", "images_per_s"} <= set(log[0])
    assert load_config(out / "config.yaml") == cfg
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["prototypes"] is True
    state = load_file(str(weights))
    assert "embeddings.block2.weight" in state and "classifier.weight" in state


def test_same_seed_same_weights_twice_on_cpu(tiny_cfg, tmp_path):
    a = load_file(str(train_cam.run(tiny_cfg("train_cam.max_steps=2", f"work_dir={tmp_path / 'a'}"))))
    b = load_file(str(train_cam.run(tiny_cfg("train_cam.max_steps=2", f"work_dir={tmp_path / 'b'}"))))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_baseline_has_no_prototype_module(tiny_cfg):
    weights = train_cam.run(tiny_cfg("train_cam.max_steps=1", "model.prototypes=false"))
    assert not any(k.startswith("embeddings.") for k in load_file(str(weights)))
    log = read_jsonl(weights.parent / "log.jsonl")
    assert log[-1]["l_s"] == 0.0
