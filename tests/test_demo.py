"""The demo end to end on a tiny dataset: every stage runs, through the pipeline runner (each stage
leaves its done.json), for both models, and the table is printed."""

import json

from rpnet import stages
from rpnet.demo import SUMMARY_KEYS, format_summary, run_demo

TINY = ["train_cam.epochs=1", "train_cam.max_steps=1", "train_irn.max_steps=1", "train_seg.max_steps=1", "train_cam.batch_size=4", "train_cam.crop_size=64", "train_cam.resize_long=[56, 72]",
        "make_cam.scales=[1.0]", "ir_label.workers=0", "train_irn.epochs=1", "train_irn.batch_size=4",
        "train_irn.crop_size=64", "train_irn.path_radius=3", "pseudo.steps=4", "eval_cam.num_pictures=1",
        "eval_pseudo.num_pictures=1", "train_seg.epochs=1", "train_seg.batch_size=4", "train_seg.crop_size=64",
        "eval_seg.scales=[1.0]", "eval_seg.num_pictures=1", "device=cpu"]


def test_demo_runs_every_stage_for_baseline_and_rpnet(tmp_path, capsys):
    summary = run_demo(tmp_path, n_train=8, n_val=2, size=64, overrides=TINY)
    assert set(summary) == {"baseline", "rpnet"}
    for name in summary:
        assert list(summary[name]["seconds"]) == list(stages.names())
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert 0 <= metrics["cam_miou"] <= 100 and 0 <= metrics["pseudo_miou"] <= 100
        if "eval-seg" in stages.names():
            assert 0 <= summary[name]["seg_miou"] <= 100
        for stage in stages.names():
            assert (tmp_path / name / stage.replace("-", "_") / "done.json").is_file()
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    out = capsys.readouterr().out
    assert "baseline" in out and "rpnet" in out and "pseudo-label mIoU" in out
    assert (tmp_path / "report.html").is_file()


def test_summary_rows_only_for_metrics_some_model_has():
    text = format_summary({"baseline": {"cam_miou": 10.0, "seconds": {"a": 60.0}},
                           "rpnet": {"cam_miou": 12.5, "pseudo_miou": 20.0, "seconds": {"a": 30.0}}})
    lines = text.splitlines()
    assert lines[1].split() == ["CAM", "mIoU", "10.00", "12.50"]
    assert lines[2].split() == ["pseudo-label", "mIoU", "nan", "20.00"]
    assert lines[3].split() == ["minutes", "1.0", "0.5"] and len(lines) == 4
    assert "segmentation mIoU" in SUMMARY_KEYS.values()
