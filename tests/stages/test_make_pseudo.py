"""make-pseudo on a tiny synthetic set, with CAMs and IRN weights written by hand."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from rpnet.data.build import build_dataset
from rpnet.data.dataset import ImageRecord
from rpnet.engine.checkpoint import save_model_weights
from rpnet.errors import RpnetError
from rpnet.io import IGNORE_INDEX, load_mask, load_npz, read_json, save_mask, save_npz
from rpnet.stages import make_pseudo
from rpnet.layout import WorkDir
from rpnet.layout import load_boundary
from rpnet.models.build import build_irn

FAST = ("pseudo.steps=32",)
EDGE_LOGIT = 20.0  # sigmoid(-20) ~ 2e-9: no boundary anywhere; sigmoid(20): boundary everywhere


def write_cams(cfg):
    """CAMs that are 1 on each tagged class's GT pixels and 0 elsewhere; returns {id: (keys, gt)}."""
    data = build_dataset(cfg.data, cfg.data.train_split, masks=True)
    truth = {}
    for i, rec in enumerate(data.records):
        mask = data[i]["mask"]
        keys = np.array(sorted(rec.tags), dtype=np.int64)
        high = np.stack([mask == k + 1 for k in keys]).astype(np.float16)
        save_npz(WorkDir(cfg.work_dir).cams / f"{rec.id}.npz", keys=keys, cam=high[:, ::4, ::4], high_res=high)
        truth[rec.id] = (keys, mask)
    return truth


def write_irn(cfg, edge_logit=None):
    """IRN weights: random, or with a boundary head that outputs ``edge_logit`` everywhere."""
    torch.manual_seed(0)
    net = build_irn(cfg.model)
    if edge_logit is not None:
        with torch.no_grad():
            net.edge_out.weight.zero_()
            net.edge_out.bias.fill_(edge_logit)
    save_model_weights(cfg.work_dir / "train_irn" / "model.safetensors", net)


def test_masks_have_the_image_size_and_only_its_classes(tiny_cfg):
    cfg = tiny_cfg(*FAST)
    truth = write_cams(cfg)
    write_irn(cfg)
    out = make_pseudo.run(cfg)
    assert sorted(f.stem for f in out.glob("*.png")) == sorted(truth)
    for image_id, (keys, gt) in truth.items():
        mask = load_mask(out / f"{image_id}.png")
        assert mask.shape == gt.shape
        assert set(np.unique(mask)) <= {0, *(keys + 1).tolist()}
        edge = load_boundary(WorkDir(cfg.work_dir).boundaries / f"{image_id}.png")
        assert edge.shape == (16, 16) and 0.0 <= edge.min() and edge.max() <= 1.0
    with open(WorkDir(cfg.work_dir).review, newline="") as fh:
        review = list(csv.DictReader(fh))
    assert len(review) == sum(len(keys) for keys, _ in truth.values())  # one row per tag of each image
    shares = [float(row["percent_of_image"]) for row in review]
    assert shares == sorted(shares) and [row["rank"] for row in review] == [str(i) for i in range(1, len(review) + 1)]


def test_the_review_list_by_hand(tmp_path):
    # a: 8 x 12 = 96 pixels tagged cat (0) and dog (1), cat on 48 of them, dog on none;
    # b: 10 x 20 = 200 pixels tagged cat, on 1 of them (0.5 %, under 1 %); c: untagged
    a = np.zeros((8, 12), np.uint8)
    a[:4] = 1
    b = np.zeros((10, 20), np.uint8)
    b[0, 0] = 1
    for name, mask in (("a", a), ("b", b), ("c", np.zeros((2, 2), np.uint8))):
        save_mask(tmp_path / f"{name}.png", mask)
    records = [ImageRecord("a", Path("photos/a.jpg"), (0, 1)), ImageRecord("b", Path("photos/b.jpg"), (0,)),
               ImageRecord("c", Path("photos/c.jpg"), ())]
    rows = make_pseudo.review_rows(records, ["background", "cat", "dog"], tmp_path)
    assert rows == [
        {"rank": 1, "image": "a", "file": "a.jpg", "tag": "dog", "percent_of_image": 0.0, "flag": "empty"},
        {"rank": 2, "image": "b", "file": "b.jpg", "tag": "cat", "percent_of_image": 0.5, "flag": "tiny"},
        {"rank": 3, "image": "a", "file": "a.jpg", "tag": "cat", "percent_of_image": 50.0, "flag": ""}]
    assert make_pseudo.review_csv(rows).splitlines()[:2] == ["rank,image,file,tag,percent_of_image,flag",
                                                             "1,a,a.jpg,dog,0.0,empty"]


def test_without_boundaries_the_walk_spreads_the_class_over_the_image(tiny_cfg):
    cfg = tiny_cfg("pseudo.steps=64")
    truth = write_cams(cfg)
    write_irn(cfg, edge_logit=-EDGE_LOGIT)
    out = make_pseudo.run(cfg)
    single = {i: t for i, t in truth.items() if len(t[0]) == 1}
    assert single
    for image_id, (keys, gt) in single.items():
        mask = load_mask(out / f"{image_id}.png")
        assert (gt == 0).any() and (mask == keys[0] + 1).all()  # background pixels taken over too


def test_boundaries_everywhere_leave_only_background(tiny_cfg):
    # the CAMs are multiplied by (1 - boundary) before the walk: nothing is left to spread
    # (and nothing to calibrate a background score from: a number is needed)
    cfg = tiny_cfg(*FAST, "pseudo.bg_threshold=0.25")
    truth = write_cams(cfg)
    write_irn(cfg, edge_logit=EDGE_LOGIT)
    out = make_pseudo.run(cfg)
    for image_id in truth:
        assert (load_mask(out / f"{image_id}.png") == 0).all()
        edge = load_boundary(WorkDir(cfg.work_dir).boundaries / f"{image_id}.png")
        assert (edge == 1.0).all()


def test_image_without_tags_is_background_and_finished_images_are_skipped(tiny_cfg):
    cfg = tiny_cfg(*FAST)
    write_cams(cfg)
    write_irn(cfg)
    save_npz(WorkDir(cfg.work_dir).cams / "synth_000002.npz", keys=np.zeros(0, np.int64),
             cam=np.zeros((0, 16, 16), np.float16), high_res=np.zeros((0, 64, 64), np.float16))
    done = WorkDir(cfg.work_dir).pseudo_masks / "synth_000005.png"
    save_mask(done, np.full((64, 64), IGNORE_INDEX, np.uint8))
    out = make_pseudo.run(cfg)
    assert (load_mask(out / "synth_000002.png") == 0).all()
    assert (load_mask(done) == IGNORE_INDEX).all()  # left alone
    assert len(list(out.glob("*.png"))) == 8 and not list(out.glob(".*tmp*"))


def test_cam_of_the_wrong_size_is_a_clear_error(tiny_cfg):
    cfg = tiny_cfg(*FAST)
    write_cams(cfg)
    write_irn(cfg)
    save_npz(WorkDir(cfg.work_dir).cams / "synth_000000.npz", keys=np.array([1]),
             cam=np.zeros((1, 8, 8), np.float16), high_res=np.zeros((1, 64, 64), np.float16))
    with pytest.raises(RpnetError, match=r"needs \(16, 16\); rerun make-cam"):
        make_pseudo.run(cfg)


def test_missing_inputs_are_clear_errors(tiny_cfg):
    cfg = tiny_cfg(*FAST)
    with pytest.raises(RpnetError, match="run make-cam first"):
        make_pseudo.run(cfg)
    write_cams(cfg)
    with pytest.raises(RpnetError, match="run train-irn first"):
        make_pseudo.run(cfg)


def test_walks_and_the_calibrated_background_score_are_written(tiny_cfg):
    cfg = tiny_cfg(*FAST)
    truth = write_cams(cfg)
    write_irn(cfg, edge_logit=-EDGE_LOGIT)
    make_pseudo.run(cfg)
    calibration = read_json(cfg.work_dir / "make_pseudo" / "calibration.json")
    assert calibration["sources"] == {"bg_threshold": "auto"} and 0 < calibration["values"]["bg_threshold"] < 1
    for image_id, (keys, _) in truth.items():
        walk = load_npz(WorkDir(cfg.work_dir).walks / f"{image_id}.npz")
        assert walk["keys"].tolist() == list(keys) and walk["size"].tolist() == [64, 64]
        assert walk["walked"].shape == (len(keys), 16, 16)
    # a number in the config wins over the estimate, which is still recorded
    again = tiny_cfg(*FAST, "pseudo.bg_threshold=0.9", "work_dir=" + str(cfg.work_dir))
    (cfg.work_dir / "make_pseudo" / "masks").rename(cfg.work_dir / "old_masks")
    make_pseudo.run(again)
    calibration2 = read_json(cfg.work_dir / "make_pseudo" / "calibration.json")
    assert calibration2["values"] == {"bg_threshold": 0.9} and calibration2["estimates"] == calibration["estimates"]
