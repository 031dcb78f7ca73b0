"""eval-pseudo against the ground truth of a tiny synthetic set, with pseudo masks written by hand."""

import numpy as np
import pytest

from rpnet.data.build import build_dataset
from rpnet.errors import RpnetError
from rpnet.io import IGNORE_INDEX, read_json, save_mask, save_npz
from rpnet.stages import eval_pseudo
from rpnet.layout import WorkDir, save_boundary, update_metrics
from rpnet.calibration import cam_threshold


def ground_truth(cfg):
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    return {rec.id: (np.array(sorted(rec.tags)), data[i]["mask"]) for i, rec in enumerate(data.records)}


def test_masks_equal_to_the_ground_truth_score_100_and_keep_cam_metrics(tiny_cfg):
    cfg = tiny_cfg("eval_pseudo.num_pictures=2", "eval_cam.threshold=0.3")
    truth = ground_truth(cfg)
    for image_id, (keys, gt) in truth.items():
        save_mask(WorkDir(cfg.work_dir).pseudo_masks / f"{image_id}.png", gt)
        high = np.stack([gt == k + 1 for k in keys]).astype(np.float16)
        save_npz(WorkDir(cfg.work_dir).cams / f"{image_id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)
        save_boundary(WorkDir(cfg.work_dir).boundaries / f"{image_id}.png", np.zeros((16, 16), np.float32))
    update_metrics(cfg.work_dir, cam_miou=42.0, cam_threshold=0.3, cam_per_class={"background": 80.0})
    metrics = eval_pseudo.run(cfg)
    assert metrics["pseudo_miou"] == 100.0
    saved = read_json(cfg.work_dir / "metrics.json")
    assert saved["pseudo_miou"] == 100.0 and saved["pseudo_per_class"]["background"] == 100.0
    assert saved["cam_miou"] == 42.0 and saved["cam_threshold"] == 0.3 and saved["cam_per_class"] == {"background": 80.0}
    assert len(list((cfg.work_dir / "eval_pseudo" / "pictures").glob("*.png"))) == 2
    assert cam_threshold(cfg) == 0.3


def test_all_background_scores_the_background_share(tiny_cfg):
    # predicting background everywhere: background IoU = background pixels / scored pixels,
    # every class present in the ground truth has IoU 0
    cfg = tiny_cfg("eval_pseudo.num_pictures=0", "eval_cam.threshold=0.2")
    truth = ground_truth(cfg)
    background = scored = 0
    present = set()
    for image_id, (_, gt) in truth.items():
        save_mask(WorkDir(cfg.work_dir).pseudo_masks / f"{image_id}.png", np.zeros_like(gt))
        background += int((gt == 0).sum())
        scored += int((gt != IGNORE_INDEX).sum())
        present |= set(np.unique(gt).tolist()) - {0, IGNORE_INDEX}
    metrics = eval_pseudo.run(cfg)
    expected = 100 * (background / scored) / (1 + len(present))
    assert metrics["pseudo_miou"] == pytest.approx(expected, abs=0.01)
    assert metrics["pseudo_per_class"]["background"] == pytest.approx(100 * background / scored, abs=0.01)
    assert cam_threshold(cfg) == 0.2  # a number in the config needs no eval-cam run


def test_missing_pseudo_mask_is_a_clear_error(tiny_cfg):
    with pytest.raises(RpnetError, match="run make-pseudo first"):
        eval_pseudo.run(tiny_cfg())
