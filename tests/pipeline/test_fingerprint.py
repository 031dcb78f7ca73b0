"""Fingerprints: order-free hashes of a stage's sections, its upstream stages and the dataset's index files."""

import os

import pytest

from rpnet.config import load_config
from rpnet.pipeline.fingerprint import data_files, data_fingerprint, digest, stage_fingerprints

STAGES = ["train-cam", "make-cam", "eval-cam", "make-ir-label", "train-irn", "make-pseudo", "eval-pseudo"]


def changed(a, b):
    return [name for name in STAGES if a[name] != b[name]]


def test_digest_ignores_key_order_and_sees_values():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 1.5}) and len(digest({})) == 16


def test_a_section_changes_its_readers_and_every_stage_below_them(tiny_voc):
    base = stage_fingerprints(load_config(None, [f"data.root={tiny_voc}"]), STAGES)
    assert len(set(base.values())) == len(STAGES)

    def with_(*overrides):
        return stage_fingerprints(load_config(None, [f"data.root={tiny_voc}", *overrides]), STAGES)

    assert changed(base, with_("eval_pseudo.num_pictures=2")) == ["eval-pseudo"]
    assert changed(base, with_("make_cam.flip=false")) == STAGES[1:]  # everything reads CAMs
    assert changed(base, with_("pseudo.beta=8")) == ["make-pseudo", "eval-pseudo"]
    # make-pseudo thresholds the CAMs at eval_cam.threshold (its only eval_cam key): it and all below it
    assert changed(base, with_("eval_cam.threshold=0.2")) == ["eval-cam", *STAGES[5:]]
    assert changed(base, with_("eval_cam.num_pictures=2")) == ["eval-cam", "eval-pseudo"]  # not make-pseudo
    assert changed(base, with_("model.beta=0.7")) == STAGES
    assert changed(base, with_("work_dir=elsewhere", "device=cpu", "data.num_workers=4", "ir_label.workers=8",
                               "make_cam.batch_size=1", "engine.sync_bn=true")) == []


def test_the_dataset_fingerprint_lists_the_split_files_and_sees_them_change(tiny_voc):
    cfg = load_config(None, [f"data.root={tiny_voc}"])
    names = [row[0] for row in data_files(cfg.data)["root"]]
    assert "ImageSets/Segmentation/train.txt" in names and "ImageSets/Segmentation/val.txt" in names
    assert not any(name.startswith("JPEGImages") for name in names)  # images are not read
    before = data_fingerprint(cfg.data)
    split = tiny_voc / "ImageSets" / "Segmentation" / "val.txt"
    stat = split.stat()
    try:
        os.utime(split, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert data_fingerprint(cfg.data) != before
    finally:
        os.utime(split, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert data_fingerprint(cfg.data) == before
    assert data_fingerprint(load_config(None, [f"data.root={tiny_voc}", "data.fraction=0.5"]).data) != before
    other = tiny_voc / "ImageSets" / "Segmentation" / "unrelated.txt"  # a split no key names: not an input
    try:
        other.write_text("synth_000000\n")
        assert data_fingerprint(cfg.data) == before
        assert data_fingerprint(cfg.data, ["unrelated"]) != before
        with_split = load_config(None, [f"data.root={tiny_voc}", "eval_seg.split=unrelated"])
        assert stage_fingerprints(with_split)["train-cam"] != stage_fingerprints(cfg)["train-cam"]
    finally:
        other.unlink()


def test_every_dataset_format_has_its_index_files_and_a_missing_one_is_an_error(monkeypatch):
    from rpnet.config import DataConfig
    from rpnet.data.build import LOADERS
    from rpnet.errors import ConfigError
    from rpnet.pipeline import fingerprint

    assert set(fingerprint.DATA_INDEX_FILES) == set(LOADERS)
    monkeypatch.delitem(fingerprint.DATA_INDEX_FILES, "folder")
    with pytest.raises(ConfigError, match="'folder' lists no index files"):
        fingerprint.data_files(DataConfig(format="folder"))


def test_a_calibration_split_reruns_the_stages_that_read_its_masks_only(tiny_voc, tmp_path):
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    split = root / "ImageSets" / "Segmentation" / "few.txt"
    split.write_text("synth_000001\nsynth_000002\n")
    without = stage_fingerprints(load_config(None, [f"data.root={root}"]), STAGES)
    # the split file alone is no input of a run that does not name it
    split.unlink()
    assert stage_fingerprints(load_config(None, [f"data.root={root}"]), STAGES) == without
    split.write_text("synth_000001\nsynth_000002\n")
    cfg = load_config(None, [f"data.root={root}", "data.calibration_split=few"])
    with_split = stage_fingerprints(cfg, STAGES)
    # the classifier and its CAMs stay; every stage that reads the masks, and those below, rerun
    assert changed(without, with_split) == STAGES[2:]
    mask = root / "SegmentationClass" / "synth_000002.png"
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a calibration mask edited
    assert changed(with_split, stage_fingerprints(cfg, STAGES)) == STAGES[2:]
    split.write_text("synth_000001\n")
    assert changed(with_split, stage_fingerprints(cfg, STAGES)) == STAGES[2:]


def test_the_same_dataset_by_another_path_is_the_same_input(tiny_voc, tmp_path, monkeypatch):
    base = stage_fingerprints(load_config(None, [f"data.root={tiny_voc}"]))
    link = tmp_path / "link"
    link.symlink_to(tiny_voc)
    assert stage_fingerprints(load_config(None, [f"data.root={link}"])) == base
    monkeypatch.chdir(tiny_voc.parent)
    assert stage_fingerprints(load_config(None, [f"data.root={tiny_voc.name}"])) == base
    assert stage_fingerprints(load_config(None, [f"data.root=./{tiny_voc.name}/."])) == base
