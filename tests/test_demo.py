"""The demo end to end on a tiny dataset: every stage runs for both models and the table is printed."""

import json

from rpnet.demo import PIPELINE, run_demo

TINY = ["train_cam.epochs=1", "train_cam.batch_size=4", "train_cam.crop_size=64", "train_cam.resize_long=[56, 72]",
        "make_cam.scales=[1.0]", "ir_label.workers=0", "train_irn.epochs=1", "train_irn.batch_size=4",
        "train_irn.crop_size=64", "train_irn.path_radius=3", "pseudo.steps=4", "eval_cam.num_pictures=1",
        "eval_pseudo.num_pictures=1", "device=cpu"]


def test_demo_runs_every_stage_for_baseline_and_rpnet(tmp_path, capsys):
    summary = run_demo(tmp_path, n_train=8, n_val=2, size=64, overrides=TINY)
    assert set(summary) == {"baseline", "rpnet"}
    for name in summary:
        assert list(summary[name]["seconds"]) == list(PIPELINE)
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert 0 <= metrics["cam_miou"] <= 100 and 0 <= metrics["pseudo_miou"] <= 100
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    out = capsys.readouterr().out
    assert "baseline" in out and "rpnet" in out and "pseudo-label mIoU" in out
