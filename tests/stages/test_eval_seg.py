"""eval-seg: scores checked against counts taken straight from the ground truth, CRF, files, reruns."""

import numpy as np
import pytest
import torch

from rpnet.data.build import build_dataset
from rpnet.errors import RpnetError
from rpnet.io import IGNORE_INDEX, load_mask, read_json
from rpnet.predict import SegmentationSpec, build_model, save_segmentation_weights
from rpnet.stages import eval_seg
from rpnet.layout import WorkDir

CONFIDENT = 1 - 1e-4  # probability of the chosen class in a fabricated prediction


def one_hot_probs(labels, num_labels):
    """(H, W) labels (255 read as background) -> (C, H, W) probabilities, CONFIDENT on the label."""
    labels = np.where(labels == IGNORE_INDEX, 0, labels)
    probs = np.full((num_labels, *labels.shape), (1 - CONFIDENT) / (num_labels - 1), np.float32)
    np.put_along_axis(probs, labels[None].astype(np.int64), CONFIDENT, axis=0)
    return probs


def val_set(cfg):
    return build_dataset(cfg.data, cfg.data.eval_split, masks=True)


def test_a_prediction_equal_to_the_ground_truth_scores_100_with_and_without_crf(tiny_cfg):
    cfg = tiny_cfg()
    data = val_set(cfg)
    truth = {data.records[i].id: data[i]["mask"] for i in range(len(data))}
    gt_of = {data[i]["image"].tobytes(): truth[data.records[i].id] for i in range(len(data))}
    oracle = lambda image: one_hot_probs(gt_of[image.tobytes()], len(data.class_names))  # noqa: E731
    metrics = eval_seg.evaluate(oracle, data, cfg.work_dir, crf=True, num_pictures=2)
    assert metrics["seg_miou"] == 100.0 and metrics["seg_miou_crf"] == 100.0
    present = {data.class_names[k] for m in truth.values() for k in np.unique(m) if k != IGNORE_INDEX}
    assert {k for k, v in metrics["seg_per_class"].items() if v is not None} == present
    assert all(metrics["seg_per_class"][name] == 100.0 for name in present)
    for image_id, gt in truth.items():  # the written masks are the predictions, as palette PNGs
        assert np.array_equal(load_mask(WorkDir(cfg.work_dir).seg_masks / f"{image_id}.png"),
                              np.where(gt == IGNORE_INDEX, 0, gt))
    assert len(list((cfg.work_dir / "eval_seg" / "pictures").glob("*.png"))) == 2


def test_all_background_prediction_scores_by_counting(tiny_cfg):
    cfg = tiny_cfg()
    data = val_set(cfg)
    num_labels = len(data.class_names)
    background = lambda image: one_hot_probs(np.zeros(image.shape[:2], np.uint8), num_labels)  # noqa: E731
    metrics = eval_seg.evaluate(background, data, cfg.work_dir, crf=False, num_pictures=0)
    gts = np.concatenate([data[i]["mask"].ravel() for i in range(len(data))])
    labelled = gts[gts != IGNORE_INDEX]
    # background: TP = background pixels, FP = every other labelled pixel; the union is all labelled pixels
    expected_bg = 100 * np.sum(labelled == 0) / labelled.size
    assert metrics["seg_per_class"]["background"] == pytest.approx(expected_bg, abs=0.01)
    present = np.unique(labelled)
    assert all(metrics["seg_per_class"][data.class_names[k]] == 0.0 for k in present if k != 0)
    assert metrics["seg_miou"] == pytest.approx(expected_bg / len(present), abs=0.01)
    assert "seg_miou_crf" not in metrics


def test_crf_keeps_the_shape_and_the_label_set():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    probs = rng.random((4, 20, 30)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    pred, refined = eval_seg.predict_labels(lambda _: probs, image, crf=True)
    assert pred.shape == refined.shape == (20, 30) and pred.dtype == refined.dtype == np.uint8
    assert np.array_equal(pred, probs.argmax(0)) and set(np.unique(refined)) <= set(range(4))
    assert eval_seg.predict_labels(lambda _: probs, image, crf=False)[1] is None


def test_run_writes_metrics_masks_and_skips_finished_images(tiny_cfg):
    overrides = ("eval_seg.num_pictures=0", "eval_seg.scales=[1.0]")
    cfg = tiny_cfg(*overrides)
    with pytest.raises(RpnetError, match="train-seg"):
        eval_seg.run(cfg)
    # train-seg's output, without the training: an untrained model with its metadata
    torch.manual_seed(0)
    spec = SegmentationSpec("deeplab_largefov", "resnet18", 16, val_set(cfg).class_names)
    save_segmentation_weights(WorkDir(cfg.work_dir).weights("train-seg"), build_model(spec), spec)
    metrics = eval_seg.run(cfg)
    saved = read_json(cfg.work_dir / "metrics.json")
    assert {"seg_miou", "seg_miou_crf", "seg_per_class"} <= set(saved) and saved["seg_miou"] == metrics["seg_miou"]
    assert 0 <= saved["seg_miou"] <= 100 and list(saved["seg_per_class"]) == list(val_set(cfg).class_names)
    masks = sorted(WorkDir(cfg.work_dir).seg_masks.glob("*.png"))
    assert [p.stem for p in masks] == sorted(val_set(cfg).ids)
    stamps = [p.stat().st_mtime_ns for p in masks]
    eval_seg.run(cfg)  # same weights and settings: the masks are read back, not written again
    assert [p.stat().st_mtime_ns for p in masks] == stamps
    eval_seg.run(tiny_cfg(*overrides, "eval_seg.flip=false"))  # other settings: predicted again
    assert [p.stat().st_mtime_ns for p in masks] != stamps
    eval_seg.run(tiny_cfg(*overrides, "eval_seg.crf=false"))  # no CRF: the old CRF figures go
    saved = read_json(cfg.work_dir / "metrics.json")
    assert "seg_miou" in saved and not {"seg_miou_crf", "seg_per_class_crf"} & set(saved)
