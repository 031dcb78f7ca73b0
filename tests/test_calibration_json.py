"""calibration.json: a number in the config wins over the estimate, and what is written is what is used."""

import json

import pytest

from rpnet.calibration import (CALIBRATION_FILE, calibrated_value, calibration_entries, calibration_summary, resolve,
                               write_calibration)
from rpnet.errors import RpnetError


def test_resolve_uses_the_estimate_for_auto_and_the_number_otherwise():
    assert resolve("auto", 0.123456) == (0.1235, "auto")
    assert resolve(0.3, 0.123456) == (0.3, "config")


def test_written_values_read_back_with_their_sources(tmp_path):
    values = write_calibration(tmp_path, {"fg_threshold": "auto", "bg_threshold": 0.05},
                               {"fg_threshold": 0.52, "bg_threshold": 0.185}, {"images": 3})
    assert values == {"fg_threshold": 0.52, "bg_threshold": 0.05}
    record = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert record["estimates"] == {"fg_threshold": 0.52, "bg_threshold": 0.185}
    assert record["sources"] == {"fg_threshold": "auto", "bg_threshold": "config"}
    assert record["evidence"] == {"images": 3}
    assert calibrated_value(tmp_path, "bg_threshold") == 0.05
    assert calibration_entries(tmp_path / CALIBRATION_FILE) == [("fg_threshold", 0.52, "auto"),
                                                                ("bg_threshold", 0.05, "config")]
    assert calibration_summary(tmp_path / CALIBRATION_FILE) == "fg_threshold 0.52 (auto), bg_threshold 0.05 (config)"


def test_missing_or_broken_calibration(tmp_path):
    with pytest.raises(RpnetError, match="no calibration"):
        calibrated_value(tmp_path, "bg_threshold")
    (tmp_path / CALIBRATION_FILE).write_text("{not json")
    with pytest.raises(RpnetError, match="unreadable"):
        calibrated_value(tmp_path, "bg_threshold")
    assert calibration_entries(tmp_path / CALIBRATION_FILE) == [] and calibration_summary(tmp_path / "none.json") == ""
    write_calibration(tmp_path, {"a": "auto"}, {"a": 0.5})
    with pytest.raises(RpnetError, match="no value for 'b'"):
        calibrated_value(tmp_path, "b")


def test_values_chosen_on_masks_win_for_auto_keys_only_and_are_recorded_with_their_evidence(tmp_path):
    from rpnet.calibration import MaskCalibration, MaskChoice, resolve_values

    choice = MaskChoice((0.1, 0.2, 0.3), (40.0, 55.5, 50.0), 1, {"miou": 52.0, "low": 44.0, "high": 60.0})
    masks = MaskCalibration("few", ("a", "b"), {"fg_threshold": 0.2, "bg_threshold": 0.1}, {"cam_threshold": choice},
                            {"source": "cam", "source_scores": {"walk": 41.25, "cam": 55.5}})
    configured = {"fg_threshold": "auto", "bg_threshold": 0.05}
    estimates = {"fg_threshold": 0.18, "bg_threshold": None}  # None: the data gave no label-free estimate
    assert resolve_values(configured, estimates, masks) == ({"fg_threshold": 0.2, "bg_threshold": 0.05},
                                                            {"fg_threshold": "masks", "bg_threshold": "config"})
    write_calibration(tmp_path, configured, estimates, {}, masks)
    record = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert record["method"] == "masks" and record["estimates"] == {"fg_threshold": 0.18, "bg_threshold": None}
    assert record["masks"] == {"split": "few", "k": 2, "ids": ["a", "b"],
                               "candidates": {"cam_threshold": [0.1, 0.2, 0.3]},
                               "scores": {"cam_threshold": [40.0, 55.5, 50.0]},
                               "estimates": {"cam_threshold": {"miou": 52.0, "low": 44.0, "high": 60.0}},
                               "source": "cam", "source_scores": {"walk": 41.25, "cam": 55.5}}
    assert calibration_summary(tmp_path / CALIBRATION_FILE) == (
        "fg_threshold 0.2 (masks), bg_threshold 0.05 (config), labels from the cam (55.5 on 2 masks against the "
        "walk's 41.2)")
    assert choice.chosen == 0.2


def test_estimate_text_and_metrics():
    from rpnet.calibration import MaskChoice, estimate_metrics, estimate_text

    choice = MaskChoice((0.1,), (50.0,), 0, {"miou": 41.23, "low": 33.1, "high": 49.3})
    metrics = estimate_metrics("cam", choice)
    assert metrics == {"cam_miou_estimate": 41.23, "cam_miou_estimate_low": 33.1, "cam_miou_estimate_high": 49.3}
    assert estimate_text(metrics, "cam") == "41.2 (90 % interval 33.1-49.3)"
    assert estimate_text(metrics, "pseudo") is None
    assert estimate_metrics("cam", MaskChoice((0.1,), (50.0,), 0, None)) == {}
