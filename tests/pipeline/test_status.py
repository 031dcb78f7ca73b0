"""``rpnet status``: one line per stage with its state and figures, from the config saved in the work dir."""

import json

import pytest

from rpnet.calibration import write_calibration
from rpnet.cli import main
from rpnet.errors import DataError
from rpnet.pipeline import format_status, run_pipeline
from rpnet.pipeline.status import figures, result_warnings


def lines_by_stage(text):
    rows = [line.split() for line in text.splitlines()]
    assert rows[0] == ["stage", "state", "finished", "seconds", "figures"]
    return {row[0]: row for row in rows[1:]}


def test_status_shows_done_stale_partial_and_missing(fake, fake_cfg, capsys):
    cfg = fake_cfg()
    run_pipeline(cfg, until="eval-cam")
    rows = lines_by_stage(format_status(cfg.work_dir))
    assert [rows[n][1] for n in fake.ORDER] == ["done"] * 3 + ["missing"] * 4
    assert rows["eval-cam"][-2:] == ["cam_miou", "15.00"]
    fake.kill["make-ir-label"] = 1
    with pytest.raises(fake.Killed):
        run_pipeline(fake_cfg("eval_cam.threshold=0.2"))  # saves the new config, reruns eval-cam first
    rows = lines_by_stage(format_status(cfg.work_dir))
    assert rows["eval-cam"][-1] == "20.00" and rows["make-ir-label"][1] == "partial"
    run_pipeline(fake_cfg("eval_cam.threshold=0.2", "make_cam.flip=false"), until="train-cam")
    assert main(["status", str(cfg.work_dir)]) == 0  # the saved config now has make_cam.flip false
    rows = lines_by_stage(capsys.readouterr().out)
    assert rows["train-cam"][1] == "done" and rows["make-cam"][1] == "stale" and rows["eval-cam"][1] == "stale"
    assert rows["make-ir-label"][1] == "stale" and rows["eval-pseudo"][1] == "missing"


def test_status_of_a_folder_that_is_no_work_dir_is_an_error(tmp_path, capsys):
    with pytest.raises(DataError, match="config.yaml not found"):
        format_status(tmp_path)
    assert main(["status", str(tmp_path)]) == 1
    assert "is not a work dir made by `rpnet run`" in capsys.readouterr().err


def test_figures_keep_numbers_and_leave_tables_out():
    assert figures({"cam_miou": 48.3, "cam_threshold": 0.25, "cam_per_class": {"cat": 1.0}, "ok": True}) == \
        "cam_miou 48.30, cam_threshold 0.25"
    # counts as integers; an estimate with its interval
    assert figures({"cam_images": 190, "cam_miou_estimate": 41.2, "cam_miou_estimate_low": 33.1,
                    "cam_miou_estimate_high": 49.35}) == "cam_images 190, cam_miou_estimate 41.20 [33.10, 49.35]"


def test_status_shows_the_thresholds_a_stage_calibrated(fake, fake_cfg):
    cfg = fake_cfg()
    run_pipeline(cfg, until="make-ir-label")
    write_calibration(cfg.work_dir / "make_ir_label", {"fg_threshold": "auto", "bg_threshold": 0.05},
                      {"fg_threshold": 0.185, "bg_threshold": 0.0925})
    rows = lines_by_stage(format_status(cfg.work_dir))
    assert " ".join(rows["make-ir-label"]).endswith("fg_threshold 0.185 (auto), bg_threshold 0.05 (config)")


def test_a_stage_in_progress_is_running_and_a_calibrated_threshold_is_listed_once(fake, fake_cfg):
    import subprocess
    import sys

    cfg = fake_cfg()
    run_pipeline(cfg, until="eval-cam")
    write_calibration(cfg.work_dir / "eval_cam", {"cam_threshold": "auto"}, {"cam_threshold": 0.155})
    done = json.loads((cfg.work_dir / "eval_cam" / "done.json").read_text())
    done["metrics"]["cam_threshold"] = 0.15  # what eval-cam adds beside calibration.json
    (cfg.work_dir / "eval_cam" / "done.json").write_text(json.dumps(done))
    row = " ".join(lines_by_stage(format_status(cfg.work_dir))["eval-cam"])
    assert row.count("cam_threshold") == 1 and row.endswith("cam_threshold 0.155 (auto)")
    fake.kill["make-ir-label"] = 1
    with pytest.raises(fake.Killed):
        run_pipeline(cfg)
    assert lines_by_stage(format_status(cfg.work_dir))["make-ir-label"][1] == "partial"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rpnet.workdir import work_dir_lock\n"
                               f"with work_dir_lock({str(cfg.work_dir)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # another rpnet process is at work there
        assert lines_by_stage(format_status(cfg.work_dir))["make-ir-label"][1] == "running"
    finally:
        holder.kill()
        holder.wait()


def test_warnings_name_poor_segmentation_unpredicted_classes_a_fallen_curve_and_a_chosen_epoch():
    assert result_warnings({}) == []
    assert result_warnings({"seg_miou": 16.0, "pseudo_miou": 32.0}) == []  # half: not under half
    (far,) = result_warnings({"seg_miou": 5.9, "pseudo_miou": 32.0})
    assert far.startswith("segmentation scores 5.9 mIoU, under half of its pseudo labels' 32.0")
    (far,) = result_warnings({"seg_miou": 5.9, "pseudo_miou_estimate": 32.0})  # a calibration split's estimate
    assert "32.0" in far
    (never,) = result_warnings({"seg_never_predicted": ["cat", "cup"]})
    assert "never predicts cat, cup" in never
    curve = {"seg_val_peak": 14.3, "seg_val_peak_epoch": 2, "seg_val_last": 9.3, "seg_epochs": 10}
    assert result_warnings({**curve, "seg_model_epoch": 10}) == []  # 5.0 points lost: not more than 5
    (fell,) = result_warnings({**curve, "seg_val_last": 5.9, "seg_model_epoch": 10})
    assert fell.startswith("validation mIoU peaked at 14.3 (epoch 2) and ended at 5.9") and "keep=best" in fell
    (chosen,) = result_warnings({**curve, "seg_val_last": 5.9, "seg_model_epoch": 2, "seg_miou": 14.3})
    assert chosen.startswith("model.safetensors is epoch 2's of 10") and "optimistic" in chosen


def test_status_ends_with_the_warnings_of_metrics_json(fake, fake_cfg):
    cfg = fake_cfg()
    run_pipeline(cfg, until="eval-cam")
    metrics = cfg.work_dir / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "seg_never_predicted": ["cat"]}))
    assert format_status(cfg.work_dir).splitlines()[-1] == (
        "warning: the segmentation model never predicts cat on the evaluation images, whose masks hold them")
