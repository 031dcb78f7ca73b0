"""make-ir-label on a tiny synthetic set, with CAMs written by hand from the ground truth."""

import numpy as np
import pytest

from rpnet.data.build import build_dataset
from rpnet.errors import RpnetError
from rpnet.io import IGNORE_INDEX, load_mask, load_npz, read_json, save_mask, save_npz
from rpnet.stages import make_ir_label
from rpnet.layout import WorkDir


def write_cams(cfg, score):
    """CAMs that are `score` on each tagged class's GT pixels and 0 elsewhere; returns {id: (keys, gt)}."""
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    truth = {}
    for i, rec in enumerate(data.records):
        mask = data[i]["mask"]
        keys = np.array(sorted(rec.tags), dtype=np.int64)
        high = np.stack([(mask == k + 1) * score for k in keys]).astype(np.float16)
        save_npz(WorkDir(cfg.work_dir).cams / f"{rec.id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)
        truth[rec.id] = (keys, mask)
    return truth


def test_confident_cams_give_the_objects_and_background(tiny_cfg):
    cfg = tiny_cfg("ir_label.workers=1", "ir_label.fg_threshold=0.30", "ir_label.bg_threshold=0.05")
    truth = write_cams(cfg, 1.0)
    out = make_ir_label.run(cfg)
    files = sorted(out.glob("*.png"))
    assert sorted(f.stem for f in files) == sorted(truth)
    for f in files:
        keys, gt = truth[f.stem]
        labels = load_mask(f)
        assert labels.shape == gt.shape
        assert set(np.unique(labels)) <= {0, IGNORE_INDEX, *(keys + 1).tolist()}
        # a CAM of 1 on the object beats both background scores: the CRF keeps the objects
        known = gt != IGNORE_INDEX
        assert (labels[known] == gt[known]).mean() > 0.9


def test_weak_cams_are_unsure(tiny_cfg):
    # 0.2 on the object: below the foreground map's background score (0.30), above the
    # background map's (0.05), so object pixels are "unsure" and no pixel is foreground
    cfg = tiny_cfg("ir_label.workers=1", "ir_label.fg_threshold=0.30", "ir_label.bg_threshold=0.05")
    truth = write_cams(cfg, 0.2)
    out = make_ir_label.run(cfg)
    for image_id, (keys, gt) in truth.items():
        labels = load_mask(out / f"{image_id}.png")
        assert set(np.unique(labels)) <= {0, IGNORE_INDEX}
        objects = (gt != 0) & (gt != IGNORE_INDEX)
        # the CRF of the background map trims object edges (to background), but most stays unsure
        assert (labels[objects] == IGNORE_INDEX).mean() > 0.6
        assert (labels[gt == 0] == 0).mean() > 0.9


def test_rerun_skips_finished_images(tiny_cfg):
    cfg = tiny_cfg("ir_label.workers=1", "ir_label.fg_threshold=0.30", "ir_label.bg_threshold=0.05")
    write_cams(cfg, 1.0)
    done = WorkDir(cfg.work_dir).ir_labels / "synth_000003.png"
    save_mask(done, np.full((64, 64), 7, np.uint8))
    make_ir_label.run(cfg)
    assert (load_mask(done) == 7).all()  # left alone
    assert len(list(done.parent.glob("*.png"))) == 8
    assert not list(done.parent.glob(".*tmp*"))


def test_two_workers_write_the_same_labels_as_one(tiny_cfg, tmp_path):
    one = tiny_cfg("ir_label.workers=1", "ir_label.fg_threshold=0.30", "ir_label.bg_threshold=0.05", f"work_dir={tmp_path / 'one'}")
    two = tiny_cfg("ir_label.workers=2", "ir_label.fg_threshold=0.30", "ir_label.bg_threshold=0.05", f"work_dir={tmp_path / 'two'}")
    for cfg in (one, two):
        write_cams(cfg, 0.6)
        make_ir_label.run(cfg)
    files = sorted(WorkDir(one.work_dir).ir_labels.glob("*.png"))
    assert len(files) == 8
    for f in files:
        a, b = load_mask(f), load_mask(WorkDir(two.work_dir).ir_labels / f.name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_missing_cam_is_a_clear_error(tiny_cfg):
    with pytest.raises(RpnetError, match="run make-cam first"):
        make_ir_label.run(tiny_cfg("ir_label.workers=1"))


def test_auto_thresholds_are_the_calibrated_cam_threshold_and_its_half(tiny_cfg, write_three_level_cams):
    # CAMs of 0.3 and 0.9 on alternate object rows, 0 elsewhere: the lower three-class Otsu edge t
    # lies in (0, 0.3], so t and t / 2 both mark the objects foreground and the rest background.
    cfg = tiny_cfg("ir_label.workers=1")
    write_three_level_cams(cfg)
    make_ir_label.run(cfg)
    calibration = read_json(cfg.work_dir / "make_ir_label" / "calibration.json")
    fg, bg = calibration["values"]["fg_threshold"], calibration["values"]["bg_threshold"]
    assert 0 < fg <= 0.3 and bg == round(fg / 2, 4)
    assert calibration["sources"] == {"fg_threshold": "auto", "bg_threshold": "auto"}
    values = sum(load_npz(p)["high_res"].size for p in WorkDir(cfg.work_dir).cams.glob("*.npz"))
    assert sum(calibration["evidence"]["cam_value_histogram"]) == values  # every CAM value, once


def test_constant_cams_cannot_be_calibrated(tiny_cfg):
    cfg = tiny_cfg("ir_label.workers=1")
    write_cams(cfg, 0.0)
    with pytest.raises(RpnetError, match="set it to a number"):
        make_ir_label.run(cfg)
