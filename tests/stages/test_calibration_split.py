"""A calibration split (data.calibration_split) through the stages: eval-cam and make-ir-label choose the CAM
threshold on its masks, make-pseudo chooses the label source, eval-cam and eval-pseudo score the other
images only, train-seg trains on the true masks; with CAMs and IRN weights written by hand."""

import shutil

import numpy as np
import pytest

from rpnet.data.build import build_dataset
from rpnet.errors import DataError
from rpnet.io import load_mask, read_json, save_mask, save_npz
from rpnet.layout import WorkDir
from rpnet.stages import eval_cam, eval_pseudo, make_ir_label, make_pseudo, train_seg

from test_make_pseudo import EDGE_LOGIT, write_irn

CALIBRATION = ["synth_000001", "synth_000004"]


@pytest.fixture
def calibrated(tiny_voc, tiny_cfg, tmp_path):
    """tiny_cfg on a copy of the tiny dataset with a calibration split of two training images."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    (root / "ImageSets" / "Segmentation" / "few.txt").write_text("".join(f"{i}\n" for i in CALIBRATION))

    def make(*overrides):
        return tiny_cfg(f"data.root={root}", "data.calibration_split=few", *overrides)
    return make


def write_spilled_cams(cfg, on=0.5, off=0.2):
    """CAMs of ``on`` on each tagged class's pixels and ``off`` everywhere else: every threshold in
    [off, on) labels the image perfectly (a tie goes to the background), none below ``off`` does."""
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    truth = {}
    for i, rec in enumerate(data.records):
        mask = data[i]["mask"]
        keys = np.array(sorted(rec.tags), dtype=np.int64)
        high = np.stack([np.where(mask == k + 1, on, off) for k in keys]).astype(np.float16)
        save_npz(WorkDir(cfg.work_dir).cams / f"{rec.id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)
        truth[rec.id] = mask
    return truth


def test_eval_cam_chooses_the_threshold_on_the_masks_and_scores_the_other_images(calibrated, capsys):
    cfg = calibrated()
    write_spilled_cams(cfg)
    metrics = eval_cam.run(cfg)
    # 0.20 is the first candidate at which the two calibration images are perfect
    assert metrics["cam_threshold"] == 0.2 and metrics["cam_miou"] == 100.0
    assert metrics["cam_images"] == 6  # 8 training images, 2 of them the calibration split's
    assert (metrics["cam_miou_estimate"], metrics["cam_miou_estimate_low"], metrics["cam_miou_estimate_high"]) == \
        (100.0, 100.0, 100.0)
    assert "CAM on train (6 images)" in capsys.readouterr().out
    record = read_json(cfg.work_dir / "eval_cam" / "calibration.json")
    assert record["method"] == "masks" and record["sources"] == {"cam_threshold": "masks"}
    assert record["masks"]["ids"] == CALIBRATION and record["masks"]["k"] == 2
    scores = dict(zip(record["masks"]["candidates"]["cam_threshold"], record["masks"]["scores"]["cam_threshold"]))
    assert scores[0.2] == 100.0 and scores[0.19] < 100.0 and scores[0.49] == 100.0 and scores[0.5] < 100.0
    # two CAM values: the label-free rule has nothing to split (its estimate is None), the masks choose anyway
    assert record["estimates"] == {"cam_threshold": None}
    # a number in the config wins; its quality is still estimated from the masks
    metrics = eval_cam.run(calibrated("eval_cam.threshold=0.6"))
    assert metrics["cam_threshold"] == 0.6 and metrics["cam_miou_estimate"] < 100.0


def test_make_ir_label_takes_the_threshold_chosen_on_the_masks(calibrated):
    cfg = calibrated("ir_label.workers=0")
    write_spilled_cams(cfg)
    assert make_ir_label.calibrate(cfg, sorted(WorkDir(cfg.work_dir).cams.glob("*.npz"))) == (0.2, 0.1)
    record = read_json(cfg.work_dir / "make_ir_label" / "calibration.json")
    assert record["sources"] == {"fg_threshold": "masks", "bg_threshold": "masks"}
    assert make_ir_label.calibrate(calibrated("ir_label.fg_threshold=0.4", "ir_label.bg_threshold=auto"),
                                   sorted(WorkDir(cfg.work_dir).cams.glob("*.npz"))) == (0.4, 0.1)


def test_make_pseudo_writes_the_cams_labels_where_they_beat_the_walk(calibrated, capsys):
    cfg = calibrated("pseudo.steps=4")
    truth = write_spilled_cams(cfg)
    write_irn(cfg, edge_logit=EDGE_LOGIT)  # boundaries everywhere: the walk leaves nearly nothing
    make_pseudo.run(cfg)
    for image_id, mask in truth.items():  # the CAM at 0.2 is perfect: the masks are the ground truth
        pseudo = load_mask(WorkDir(cfg.work_dir).pseudo_masks / f"{image_id}.png")
        known = mask != 255  # the ground truth's "not sure" band is labelled like its neighbours
        np.testing.assert_array_equal(pseudo[known], np.where(mask == 255, 0, mask)[known])
    record = read_json(cfg.work_dir / "make_pseudo" / "calibration.json")
    assert record["masks"]["source"] == "cam" and record["masks"]["source_scores"]["cam"] == 100.0
    assert record["masks"]["source_scores"]["walk"] < 100.0
    assert record["values"]["cam_threshold"] == 0.2 and record["sources"]["cam_threshold"] == "masks"
    assert "the cam's labels score 100.0 on the 2 calibration masks, the walk's" in capsys.readouterr().out
    assert read_json(cfg.work_dir / "metrics.json")["pseudo_miou_estimate"] == 100.0
    eval_cam.run(cfg)  # eval-pseudo draws its CAM panels at eval-cam's threshold
    metrics = eval_pseudo.run(cfg)
    assert metrics["pseudo_miou"] == 100.0 and metrics["pseudo_images"] == 6


def test_make_pseudo_keeps_the_walk_when_told_to_and_without_masks(calibrated, tiny_cfg, tmp_path):
    cfg = calibrated("pseudo.steps=4", "pseudo.source=walk")
    write_spilled_cams(cfg)
    write_irn(cfg, edge_logit=EDGE_LOGIT)
    make_pseudo.run(cfg)
    record = read_json(cfg.work_dir / "make_pseudo" / "calibration.json")
    assert record["masks"]["source"] == "walk" and "cam" not in record["masks"]["source_scores"]
    assert "cam_threshold" not in record["values"]
    plain = tiny_cfg("pseudo.steps=4", f"work_dir={tmp_path / 'plain'}")  # no calibration split: auto is the walk, calibrated without masks
    write_spilled_cams(plain)
    write_irn(plain)
    make_pseudo.run(plain)
    record = read_json(plain.work_dir / "make_pseudo" / "calibration.json")
    assert record["method"] == "label-free" and "masks" not in record and list(record["values"]) == ["bg_threshold"]


def test_train_seg_trains_the_calibration_images_on_their_own_masks(calibrated):
    cfg = calibrated()
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    for i, rec in enumerate(data.records):  # pseudo masks all background, the truth is not
        save_mask(WorkDir(cfg.work_dir).pseudo_masks / f"{rec.id}.png", np.zeros_like(data[i]["mask"]))
    dataset = train_seg.training_dataset(cfg)
    by_id = {r.id: i for i, r in enumerate(dataset.records)}
    for image_id in CALIBRATION:
        np.testing.assert_array_equal(dataset[by_id[image_id]]["mask"] if dataset.transform is None else
                                      load_mask(dataset.records[by_id[image_id]].mask),
                                      data[data.ids.index(image_id)]["mask"])
    others = [r for r in dataset.records if r.id not in CALIBRATION]
    assert all(r.mask.parent == WorkDir(cfg.work_dir).pseudo_masks for r in others)
    off = train_seg.training_dataset(calibrated("train_seg.calibration_masks=false"))
    assert all(r.mask.parent == WorkDir(cfg.work_dir).pseudo_masks for r in off.records)


def test_a_calibration_image_without_a_mask_stops_the_stage_by_name(calibrated):
    cfg = calibrated()
    write_spilled_cams(cfg)
    (cfg.data.root / "SegmentationClass" / f"{CALIBRATION[1]}.png").unlink()
    with pytest.raises(DataError, match=f"have no mask: {CALIBRATION[1]}"):
        eval_cam.run(cfg)


def test_when_every_mask_is_a_calibration_mask_the_estimate_is_the_only_figure(tiny_voc, tiny_cfg, tmp_path, capsys):
    root = tmp_path / "only"
    shutil.copytree(tiny_voc, root)
    for mask in (root / "SegmentationClass").glob("*.png"):  # the user outlined two images, nothing else
        if mask.stem not in CALIBRATION:
            mask.unlink()
    (root / "ImageSets" / "Segmentation" / "few.txt").write_text("".join(f"{i}\n" for i in CALIBRATION))
    cfg = tiny_cfg(f"data.root={root}", "data.calibration_split=few")
    write_spilled_cams(cfg)
    metrics = eval_cam.run(cfg)
    assert metrics == {"cam_threshold": 0.2, "cam_images": 0, "cam_miou_estimate": 100.0,
                       "cam_miou_estimate_low": 100.0, "cam_miou_estimate_high": 100.0}
    assert "nothing to score" in capsys.readouterr().out
    assert eval_pseudo.run(cfg) == {}


def test_masks_of_reads_the_chosen_images_with_the_layouts_loader_and_the_rest_from_files(tmp_path):
    from rpnet.data.dataset import ImageRecord, MasksOf

    save_mask(tmp_path / "b.png", np.full((2, 2), 3, np.uint8))
    loader = MasksOf(frozenset({"a"}), lambda record: np.full((2, 2), 7, np.uint8))  # e.g. COCO's painter
    assert loader(ImageRecord("a", tmp_path / "a.jpg", (0,))).tolist() == [[7, 7], [7, 7]]
    assert loader(ImageRecord("b", tmp_path / "b.jpg", (0,), mask=tmp_path / "b.png")).tolist() == [[3, 3], [3, 3]]


def test_the_whole_pipeline_with_a_calibration_split_and_then_without(calibrated):
    from test_demo import TINY

    from rpnet.pipeline.runner import run_pipeline

    cfg = calibrated(*TINY)
    run_pipeline(cfg)
    metrics = read_json(cfg.work_dir / "metrics.json")
    assert metrics["cam_images"] == metrics["pseudo_images"] == 6
    assert {"cam_miou_estimate", "pseudo_miou_estimate", "seg_miou"} <= set(metrics)
    for stage in ("eval_cam", "make_ir_label", "make_pseudo"):
        assert read_json(cfg.work_dir / stage / "calibration.json")["method"] == "masks"
    # the masks taken away again: the classifier and its CAMs stay, the calibrated stages rerun label-free
    plain = calibrated(*TINY, "data.calibration_split=null")
    ran = {r.name: r.action for r in run_pipeline(plain)}
    assert ran["train-cam"] == ran["make-cam"] == "skipped" and ran["eval-cam"] == ran["train-seg"] == "ran"
    assert read_json(cfg.work_dir / "make_pseudo" / "calibration.json")["method"] == "label-free"
    metrics = read_json(cfg.work_dir / "metrics.json")
    assert metrics["cam_images"] == 8 and "cam_miou_estimate" not in metrics and "pseudo_miou_estimate" not in metrics
