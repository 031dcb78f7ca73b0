import json

import numpy as np
import pytest

from rpnet.data.build import build_dataset
from rpnet.errors import RpnetError
from rpnet.io import read_json, save_npz
from rpnet.stages import eval_cam
from rpnet.stages.eval_cam import sweep_thresholds
from rpnet.stages.make_cam import cam_dir


def write_cams_from_masks(cfg, score):
    """CAMs that are `score` on each tagged class's GT pixels and 0 elsewhere."""
    data = build_dataset(cfg.data, cfg.data.train_split)
    for i, rec in enumerate(data.records):
        mask = data[i]["mask"]
        keys = np.array(sorted(rec.tags))
        high = np.stack([(mask == k + 1) * score for k in keys]).astype(np.float16)
        save_npz(cam_dir(cfg.work_dir) / f"{rec.id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)


def test_perfect_cams_score_100(tiny_cfg):
    cfg = tiny_cfg()
    write_cams_from_masks(cfg, 1.0)
    metrics = eval_cam.run(cfg)
    assert metrics["cam_miou"] == 100.0
    assert set(metrics["cam_per_class"]) >= {"background"}
    saved = read_json(cfg.work_dir / "metrics.json")
    assert saved["cam_miou"] == 100.0 and saved["cam_threshold"] == 0.05
    sweep = json.loads((cfg.work_dir / "eval_cam" / "sweep.json").read_text())
    assert sweep["thresholds"][0] == 0.05 and sweep["thresholds"][-1] == 0.6 and len(sweep["thresholds"]) == 12
    assert list((cfg.work_dir / "eval_cam" / "pictures").glob("*.png"))


def test_threshold_sweep_picks_the_right_threshold(tiny_cfg):
    # CAMs of 0.4 on the object: every threshold below 0.4 is perfect, above it all is background
    cfg = tiny_cfg()
    write_cams_from_masks(cfg, 0.4)
    sweep_cfg = tiny_cfg("eval_cam.sweep=[0.3, 0.5, 0.2]")
    metrics = eval_cam.run(sweep_cfg)
    assert metrics["cam_threshold"] == 0.3 and metrics["cam_miou"] == 100.0
    curve = json.loads((cfg.work_dir / "eval_cam" / "sweep.json").read_text())
    assert curve["miou"][1] < 100.0


def test_sweep_values():
    assert sweep_thresholds(0.05, 0.60, 0.05).tolist()[:3] == [0.05, 0.1, 0.15]


def test_missing_cam_is_a_clear_error(tiny_cfg):
    with pytest.raises(RpnetError, match="run make-cam first"):
        eval_cam.run(tiny_cfg())
