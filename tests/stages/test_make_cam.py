import math

import numpy as np
import pytest
import torch

from rpnet.data.build import build_dataset
from rpnet.errors import DataError
from rpnet.io import load_npz, save_npz
from rpnet.stages import eval_cam, make_cam, train_cam
from rpnet.stages.make_cam import multiscale_cams
from rpnet.layout import WorkDir
from rpnet.models.build import build_classifier


def test_cam_files_per_image_shapes_and_normalisation(tiny_cfg, tiny_voc):
    cfg = tiny_cfg("train_cam.max_steps=2")
    train_cam.run(cfg)
    out = make_cam.run(cfg)
    files = sorted(out.glob("*.npz"))
    assert len(files) == 8
    for f in files:
        d = load_npz(f)
        k = len(d["keys"])
        assert k >= 1 and d["cam"].shape == (k, math.ceil(64 / 4), math.ceil(64 / 4))
        assert d["high_res"].shape == (k, 64, 64) and d["high_res"].dtype == np.float16
        peaks = d["high_res"].reshape(k, -1).max(1).astype(np.float32)
        assert np.all((peaks > 0.99) | (peaks == 0))  # each class divided by its max
    ids = (tiny_voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert sorted(f.stem for f in files) == sorted(ids)


def test_rerun_skips_finished_batches_and_redoes_a_batch_with_a_missing_image_whole(tiny_cfg):
    # batches of 2: (0, 1), (2, 3), ... of the 8 images, whatever is done already
    cfg = tiny_cfg("train_cam.max_steps=1", "make_cam.batch_size=2")
    train_cam.run(cfg)
    out = WorkDir(cfg.work_dir).cams
    fake = dict(keys=np.array([0]), cam=np.zeros((1, 16, 16), np.float16), high_res=np.zeros((1, 64, 64), np.float16))
    for stem in ("synth_000000", "synth_000001", "synth_000002"):  # batch (0, 1) complete, (2, 3) not
        save_npz(out / f"{stem}.npz", **fake)
    make_cam.run(cfg)
    assert load_npz(out / "synth_000000.npz")["high_res"].max() == 0  # a finished batch is left alone
    assert load_npz(out / "synth_000001.npz")["high_res"].max() == 0
    tags = {r.id: sorted(r.tags) for r in build_dataset(cfg.data, "train").records}
    assert load_npz(out / "synth_000002.npz")["keys"].tolist() == tags["synth_000002"]  # its batch redone whole
    assert len(list(out.glob("*.npz"))) == 8
    assert not list(out.glob(".*tmp*"))  # no temp files left behind


def test_a_rerun_replaces_a_truncated_cam_and_readers_name_it(tiny_cfg, write_classifier):
    cfg = tiny_cfg("model.prototypes=false")
    write_classifier(cfg)
    out = make_cam.run(cfg)
    torn = out / "synth_000003.npz"
    whole = torn.read_bytes()
    torn.write_bytes(whole[: len(whole) // 2])  # a disk filled up, a copy cut short
    with pytest.raises(DataError, match="synth_000003.npz is unreadable.*rerun the stage"):
        eval_cam.run(cfg)
    before = {p.name: p.read_bytes() for p in out.glob("*.npz") if p != torn}
    make_cam.run(cfg)
    assert torn.read_bytes() == whole  # written again (with its batch), the same CAM
    assert {p.name: p.read_bytes() for p in out.glob("*.npz") if p != torn} == before


class Linear:
    """A stand-in model whose CAM is the image's first channel: checks scales and flips."""

    num_classes = 1

    class backbone:
        output_stride = 4

    @staticmethod
    def block_features(x):
        return {"block4": torch.nn.functional.avg_pool2d(x[:, :1], 4)}

    @staticmethod
    def cam_features(x):  # the original branch's classifier input (block4 here)
        return Linear.block_features(x)["block4"]

    @staticmethod
    def cams(f):
        return f


def test_flip_is_mirrored_back_and_scales_are_summed():
    x = torch.zeros(1, 3, 16, 16)
    x[..., :, :8] = 1.0  # left half bright
    strided, high = multiscale_cams(Linear, x, scales=(1.0,), flip=True)
    # image + its mirror, mirrored back: twice the left half, no right half
    assert torch.allclose(high[0, 0, :, :4], torch.full((16, 4), 2.0))
    assert torch.allclose(high[0, 0, :, 12:], torch.zeros(16, 4))
    _, two = multiscale_cams(Linear, x, scales=(1.0, 0.5), flip=False)
    assert torch.allclose(two[0, 0, :, :4], torch.full((16, 4), 2.0))  # each scale adds its map


def test_enhanced_cam_source_runs_the_prototype_module_on_one_image(tiny_cfg):
    cfg = tiny_cfg("train_cam.max_steps=1", "model.cam_source=enhanced", "make_cam.scales=[1.0]")
    train_cam.run(cfg)
    model = build_classifier(cfg.model, 6)
    x = torch.randn(1, 3, 64, 64)
    out = model.eval()(x, group_size=1)
    # K = 1: the enhanced CAM is the original one weighted by G(F), position by position (eq. 10)
    torch.testing.assert_close(make_cam.model_cams(model, x, enhanced=True), model.cams(out.features_enhanced))
    assert len(list(make_cam.run(cfg).glob("*.npz"))) == 8
