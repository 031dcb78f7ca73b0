import json

import numpy as np
import pytest

from rpnet.data.build import build_dataset
from rpnet.errors import RpnetError
from rpnet.io import read_json, save_npz
from rpnet.stages import eval_cam
from rpnet.stages.eval_cam import sweep_thresholds
from rpnet.layout import WorkDir
from rpnet.calibration import cam_threshold


def write_cams_from_masks(cfg, score):
    """CAMs that are `score` on each tagged class's GT pixels and 0 elsewhere."""
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    for i, rec in enumerate(data.records):
        mask = data[i]["mask"]
        keys = np.array(sorted(rec.tags))
        high = np.stack([(mask == k + 1) * score for k in keys]).astype(np.float16)
        save_npz(WorkDir(cfg.work_dir).cams / f"{rec.id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)


def test_perfect_cams_score_100_at_the_configured_threshold_and_the_oracle_one(tiny_cfg):
    cfg = tiny_cfg("eval_cam.threshold=0.5")
    write_cams_from_masks(cfg, 1.0)
    metrics = eval_cam.run(cfg)
    assert metrics["cam_miou"] == 100.0 and metrics["cam_threshold"] == 0.5
    assert metrics["cam_miou_best"] == 100.0 and metrics["cam_threshold_best"] == 0.05  # the lowest of the ties
    assert set(metrics["cam_per_class"]) >= {"background"}
    saved = read_json(cfg.work_dir / "metrics.json")
    assert saved["cam_miou"] == 100.0 and saved["cam_threshold"] == 0.5
    sweep = json.loads((cfg.work_dir / "eval_cam" / "sweep.json").read_text())
    assert sweep["thresholds"][0] == 0.05 and sweep["thresholds"][-1] == 0.95 and len(sweep["thresholds"]) == 19
    assert sweep["threshold"] == 0.5 and sweep["threshold_miou"] == 100.0
    assert list((cfg.work_dir / "eval_cam" / "pictures").glob("*.png"))
    calibration = read_json(cfg.work_dir / "eval_cam" / "calibration.json")
    assert calibration["values"] == {"cam_threshold": 0.5} and calibration["sources"] == {"cam_threshold": "config"}


def test_threshold_sweep_picks_the_right_threshold(tiny_cfg):
    # CAMs of 0.4 on the object: every threshold below 0.4 is perfect, above it all is background
    cfg = tiny_cfg()
    write_cams_from_masks(cfg, 0.4)
    metrics = eval_cam.run(tiny_cfg("eval_cam.threshold=0.5", "eval_cam.sweep=[0.3, 0.5, 0.2]"))
    assert metrics["cam_threshold_best"] == 0.3 and metrics["cam_miou_best"] == 100.0
    assert metrics["cam_miou"] < 100.0  # scored at 0.5, where all is background
    curve = json.loads((cfg.work_dir / "eval_cam" / "sweep.json").read_text())
    assert curve["miou"][1] < 100.0


def test_auto_threshold_is_calibrated_from_the_cams_without_masks(tiny_cfg, write_three_level_cams):
    # Three CAM values over the split: 0 (background), 0.3 and 0.9 on alternate object rows.
    # The three-class Otsu split puts its lower edge between 0 and 0.3: there the CAM is perfect.
    cfg = tiny_cfg()
    write_three_level_cams(cfg)
    metrics = eval_cam.run(cfg)
    assert 0.0 < metrics["cam_threshold"] <= 0.3 and metrics["cam_miou"] == 100.0
    calibration = read_json(cfg.work_dir / "eval_cam" / "calibration.json")
    assert calibration["sources"] == {"cam_threshold": "auto"}
    assert cam_threshold(cfg) == metrics["cam_threshold"]


def test_sweep_values():
    assert sweep_thresholds(0.05, 0.60, 0.05).tolist()[:3] == [0.05, 0.1, 0.15]


def test_missing_cam_is_a_clear_error(tiny_cfg):
    with pytest.raises(RpnetError, match="run make-cam first"):
        eval_cam.run(tiny_cfg())


def test_only_the_images_with_masks_are_scored_and_every_image_is_calibrated(tiny_voc, tiny_cfg, tmp_path, capsys):
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    cfg = tiny_cfg(f"data.root={root}", "eval_cam.threshold=0.5")  # two CAM values: nothing to calibrate
    write_cams_from_masks(cfg, 1.0)
    cams = sorted(WorkDir(cfg.work_dir).cams.glob("*.npz"))
    for cam in cams[:5]:  # 3 of the 8 images keep their masks
        (root / "SegmentationClass" / f"{cam.stem}.png").unlink()
    metrics = eval_cam.run(cfg)
    assert "CAM on train (3 images)" in capsys.readouterr().out
    assert metrics["cam_miou_best"] == 100.0
    # the calibration saw every CAM value of all 8 images: K classes x 64 x 64 per image
    pixels = sum(np.load(c)["high_res"].size for c in cams)
    assert sum(read_json(cfg.work_dir / "eval_cam" / "calibration.json")["evidence"]["cam_value_histogram"]) == pixels


def test_region_figures_of_perfect_cams_and_of_cams_that_cover_everything(tiny_cfg):
    # CAMs equal to the masks: every object pixel found, no background pixel taken
    cfg = tiny_cfg("eval_cam.threshold=0.5")
    write_cams_from_masks(cfg, 1.0)
    metrics = eval_cam.run(cfg)
    assert (metrics["cam_part_recall"], metrics["cam_body_recall"], metrics["cam_background_fp"]) == (100.0, 100.0, 0.0)
    assert metrics["cam_context_fp"] in (0.0, None)  # None when no image shows a co-occurring context
    # CAMs of 1 everywhere for every tag: all background is taken too
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    for i, rec in enumerate(data.records):
        keys = np.array(sorted(rec.tags))
        high = np.ones((len(keys), *data[i]["mask"].shape), np.float16)
        save_npz(WorkDir(cfg.work_dir).cams / f"{rec.id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)
    metrics = eval_cam.run(cfg)
    assert metrics["cam_background_fp"] == 100.0
