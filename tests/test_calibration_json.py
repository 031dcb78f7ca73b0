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
