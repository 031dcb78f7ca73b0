"""The work-dir layout: every path written out by hand, the CAM file format, metrics.json merging."""

import numpy as np
import pytest

from rpnet import stages
from rpnet.errors import DataError
from rpnet.io import read_json, save_npz
from rpnet.layout import CamFile, WorkDir, load_boundary, load_cams, save_boundary, save_cams, update_metrics


def test_paths_of_a_work_dir(tmp_path):
    w = WorkDir(str(tmp_path))  # a str is accepted
    assert w.root == tmp_path
    assert (w.config, w.metrics, w.report, w.gallery) == (
        tmp_path / "config.yaml", tmp_path / "metrics.json", tmp_path / "report.html", tmp_path / "gallery")
    assert w.stage("make-ir-label") == tmp_path / "make_ir_label"
    assert w.stage_config("eval-seg") == tmp_path / "eval_seg" / "config.yaml"
    assert w.calibration("make-pseudo") == tmp_path / "make_pseudo" / "calibration.json"
    assert w.weights("train-irn") == tmp_path / "train_irn" / "model.safetensors"
    assert w.pictures("eval-cam") == tmp_path / "eval_cam" / "pictures"
    assert w.cam("img_7") == tmp_path / "make_cam" / "cams" / "img_7.npz"
    assert w.cam_sweep == tmp_path / "eval_cam" / "sweep.json"
    assert w.ir_labels == tmp_path / "make_ir_label" / "labels"
    assert (w.boundaries, w.walks, w.pseudo_masks) == (
        tmp_path / "make_pseudo" / "boundaries", tmp_path / "make_pseudo" / "walks", tmp_path / "make_pseudo" / "masks")
    assert w.seg_best_weights == tmp_path / "train_seg" / "best.safetensors"
    assert (w.seg_masks, w.seg_masks_crf) == (tmp_path / "eval_seg" / "masks", tmp_path / "eval_seg" / "masks_crf")
    assert not any(tmp_path.iterdir())  # asking for a path creates nothing


def test_every_declared_stage_has_its_folder():
    assert [WorkDir("w").stage(s.name).name for s in stages.STAGES] == [
        "train_cam", "make_cam", "eval_cam", "make_ir_label", "train_irn", "make_pseudo", "eval_pseudo", "train_seg",
        "eval_seg"]


def test_cam_file_round_trip_keeps_float16_and_keys(tmp_path):
    high = np.array([[[0.0, 0.5], [0.25, 1.0]]], np.float32)  # one class, 2 x 2
    save_cams(tmp_path / "a.npz", CamFile(keys=np.array([3]), cam=high[:, :1, :1], high_res=high))
    cams = load_cams(tmp_path / "a.npz")
    assert cams.keys.dtype == np.int64 and cams.keys.tolist() == [3]
    assert cams.high_res.dtype == np.float16 and cams.high_res.tolist() == high.tolist()  # exact in float16
    assert cams.cam.shape == (1, 1, 1)


def test_a_file_without_the_cam_arrays_is_named(tmp_path):
    save_npz(tmp_path / "b.npz", keys=np.array([0]), high_res=np.zeros((1, 2, 2), np.float16))
    with pytest.raises(DataError, match=r"b.npz is not a CAM file \(no cam\); rerun make-cam"):
        load_cams(tmp_path / "b.npz")


def test_boundary_png_stores_255_grey_levels(tmp_path):
    save_boundary(tmp_path / "e.png", np.array([[0.0, 1.0], [0.5, 2.0]]))  # 2.0 clipped to 1
    grey = load_boundary(tmp_path / "e.png")
    assert grey.dtype == np.float32 and grey.tolist() == [[0.0, 1.0], [np.float32(128) / 255, 1.0]]  # rint(127.5) = 128


def test_metrics_merge_and_drop(tmp_path):
    update_metrics(tmp_path, cam_miou=40.0)
    assert update_metrics(tmp_path, pseudo_miou=50.0) == {"cam_miou": 40.0, "pseudo_miou": 50.0}
    merged = update_metrics(tmp_path, drop=("pseudo_miou", "never_written"), cam_miou=41.0)
    assert merged == {"cam_miou": 41.0} == read_json(tmp_path / "metrics.json")
