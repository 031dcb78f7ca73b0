"""``rpnet check-data``: the report on the built-in synthetic data, and on the same data broken by hand.

Every expected number is worked out here from the generator's tags (seed 0, 64 px, 8 train + 4 val
images), not read back from the function under test.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rpnet.check_data import (
    FEW_IMAGES, SizeStats, check_data, findings_json, format_findings, mask_problem, size_stats, training_count,
)
from rpnet.cli import main
from rpnet.config import load_config
from rpnet.data.dataset import ImageRecord
from rpnet.data.synthetic import generate
from rpnet.io import save_image, save_mask

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
TINY = dict(n_train=8, n_val=4, size=64, seed=0)

# The tags of the synthetic images (tags.csv / Annotations of `generate(..., seed=0, size=64)`):
#   train: 0 boat | 1 cat person | 2 bird car | 3 person | 4 plane | 5 car person | 6 bird | 7 boat
#   val:   8 bird car | 9 person | 10 plane | 11 bird boat person
CLASSES = ["bird", "boat", "car", "cat", "person", "plane"]
TRAIN_COUNTS = {"bird": 2, "boat": 2, "car": 2, "cat": 1, "person": 3, "plane": 1}
VAL_COUNTS = {"bird": 2, "boat": 1, "car": 1, "cat": 0, "person": 2, "plane": 1}
TRAIN_IDS = [f"synth_{i:06d}" for i in range(8)]
VAL_IDS = [f"synth_{i:06d}" for i in range(8, 12)]
# Batches small enough for 8 training images (the shipped config's train-irn batch of 16 is not).
SMALL_BATCHES = ["train_cam.batch_size=4", "train_irn.batch_size=4", "train_seg.batch_size=4"]


def config(root: Path, *overrides: str, fmt: str = "voc"):
    return load_config(CONFIG, [f"data.root={root}", f"data.format={fmt}", *SMALL_BATCHES, *overrides])


@pytest.fixture
def folder(tmp_path) -> Path:
    """A fresh synthetic folder dataset (images/*.png, masks/, tags.csv, classes.txt, train.txt, val.txt)."""
    return generate(tmp_path / "folder", fmt="folder", **TINY)


def tags_csv_counts(root: Path, split_file: str) -> dict[str, int]:
    """Per-class image counts of one split, read from tags.csv and <split>.txt with the csv module."""
    names = set((root / split_file).read_text().split())
    counts = dict.fromkeys(CLASSES, 0)
    with open(root / "tags.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["image"] in names:
                for tag in row["tags"].split():
                    counts[tag] += 1
    return counts


def split(findings, name):
    return next(s for s in findings.splits if s.name == name)


# --------------------------------------------------------------------------- clean synthetic data


def test_hand_counts_are_those_of_the_tags_file(folder):
    assert tags_csv_counts(folder, "train.txt") == TRAIN_COUNTS
    assert tags_csv_counts(folder, "val.txt") == VAL_COUNTS


@pytest.mark.parametrize("fmt", ["voc", "folder"])
def test_synthetic_data_passes_with_the_counts_of_its_tags(fmt, tmp_path):
    root = generate(tmp_path / fmt, fmt=fmt, **TINY)
    findings = check_data(config(root, fmt=fmt))
    assert findings.ok, findings.errors
    assert findings.class_names == ["background", *CLASSES]
    train, val = split(findings, "train"), split(findings, "val")
    assert (train.role, val.role) == ("train", "eval")
    assert (train.images, val.images) == (8, 4)
    assert train.per_class == TRAIN_COUNTS and val.per_class == VAL_COUNTS
    assert train.untagged == [] and train.training_images == 8
    assert (train.with_mask, val.with_mask) == (8, 4)
    assert train.unreadable == [] and train.bad_masks == []
    assert train.sizes == SizeStats((64, 64.0, 64), (64, 64.0, 64))
    assert findings.overlap == []
    # 64 px < 112, the low end of the synthetic config's train_cam.resize_long: every training image is small.
    assert train.small == TRAIN_IDS and train.large == []
    # Every class has fewer than 5 training images.
    few = [w for w in findings.warnings if f"fewer than {FEW_IMAGES}" in w]
    assert few == [f"classes with fewer than {FEW_IMAGES} training images: bird (2), boat (2), car (2), cat (1), "
                   "person (3), plane (1)"]
    assert not any("no masks" in n for n in findings.notes)


def test_sizes_are_judged_against_resize_long(tmp_path):
    root = generate(tmp_path / "voc", **TINY)
    # 64 px long sides: not under 32, over 2 x 24 = 48.
    train = split(check_data(config(root, "train_cam.resize_long=[16, 24]")), "train")
    assert train.small == [] and train.large == TRAIN_IDS
    train = split(check_data(config(root, "train_cam.resize_long=[32, 32]")), "train")
    assert train.small == [] and train.large == []


# --------------------------------------------------------------------------- broken by hand


def test_truncated_png_is_an_error_naming_the_file(folder):
    image = folder / "images" / "synth_000003.png"
    image.write_bytes(image.read_bytes()[:200])
    findings = check_data(config(folder, fmt="folder"))
    assert not findings.ok
    train = split(findings, "train")
    assert len(train.unreadable) == 1 and str(image) in train.unreadable[0]
    assert [e for e in findings.errors if str(image) in e] == [f"split 'train': {train.unreadable[0]}"]
    # The unreadable image has no size; the other seven have.
    assert "synth_000003" not in train.small and len(train.small) == 7


def test_truncated_jpeg_is_an_error_naming_the_file(tiny_voc, tmp_path):
    root = Path(shutil.copytree(tiny_voc, tmp_path / "voc"))
    image = root / "JPEGImages" / "synth_000009.jpg"  # a val image
    image.write_bytes(image.read_bytes()[:-400])
    findings = check_data(config(root))
    assert not findings.ok
    assert split(findings, "train").unreadable == []
    (problem,) = split(findings, "val").unreadable
    assert str(image) in problem and "truncated" in problem


def test_untagged_image_is_a_note_and_left_out_of_training(folder):
    tags = folder / "tags.csv"
    tags.write_text("".join(line + "\n" for line in tags.read_text().splitlines() if not line.startswith("synth_000005")))
    findings = check_data(config(folder, fmt="folder"))
    assert findings.ok, findings.errors
    train = split(findings, "train")
    assert train.untagged == ["synth_000005"]
    assert train.training_images == 7
    # synth_000005 was "car person": one car and one person fewer.
    assert train.per_class == {**TRAIN_COUNTS, "car": 1, "person": 2}
    assert ("split 'train': 1 of 8 images have no tag and are left out of classifier training; train-seg learns them "
            "as background (train_seg.untagged): synth_000005"
            in findings.notes)


def test_class_without_images_is_a_warning(folder):
    with open(folder / "classes.txt", "a") as fh:
        fh.write("zebra\n")
    findings = check_data(config(folder, fmt="folder"))
    assert findings.ok, findings.errors
    assert split(findings, "train").per_class == {**TRAIN_COUNTS, "zebra": 0}
    assert any(w.startswith("classes with no training image") and w.endswith(": zebra") for w in findings.warnings)


def test_image_in_both_splits_warns_when_scored_and_is_a_note_without_masks(folder):
    with open(folder / "val.txt", "a") as fh:
        fh.write("synth_000001.png\n")
    findings = check_data(config(folder, fmt="folder"))
    assert findings.ok and findings.overlap == ["synth_000001"]
    assert split(findings, "val").images == 5
    assert any("1 image in both 'train' and 'val'" in w and "synth_000001" in w for w in findings.warnings)
    shutil.rmtree(folder / "masks")
    findings = check_data(config(folder, fmt="folder"))
    assert findings.overlap == ["synth_000001"]
    assert not any("both" in w for w in findings.warnings)
    assert any("1 image in both 'train' and 'val'" in n for n in findings.notes)


def test_no_masks_is_fine_and_says_which_evaluations_are_skipped(folder):
    shutil.rmtree(folder / "masks")
    findings = check_data(config(folder, fmt="folder"))
    assert findings.ok, findings.errors
    assert (split(findings, "train").with_mask, split(findings, "val").with_mask) == (0, 0)
    assert any(n.startswith("split 'train': no masks: evaluation stages will be skipped (eval-cam, eval-pseudo)")
               for n in findings.notes)
    assert "split 'val': no masks: eval-seg writes the model's predictions for it without scoring them" in findings.notes


def test_folder_without_split_files_is_every_image_in_both_splits(folder):
    (folder / "train.txt").unlink()
    (folder / "val.txt").unlink()
    findings = check_data(config(folder, fmt="folder"))
    assert findings.ok, findings.errors
    train, val = split(findings, "train"), split(findings, "val")
    assert train.every_image and val.every_image
    assert train.images == val.images == 12
    assert train.per_class == {c: TRAIN_COUNTS[c] + VAL_COUNTS[c] for c in CLASSES}
    assert findings.overlap == TRAIN_IDS + VAL_IDS
    assert any(n.startswith(f"split 'train': there is no {folder / 'train.txt'}") for n in findings.notes)
    # The masks are there, so scoring the training images is worth a warning.
    assert any("12 images in both 'train' and 'val'" in w for w in findings.warnings)


def test_partial_masks_are_a_note(folder):
    (folder / "masks" / "synth_000002.png").unlink()
    findings = check_data(config(folder, fmt="folder"))
    assert findings.ok
    assert split(findings, "train").with_mask == 7
    assert "split 'train': 7 of 8 images have a mask; the others are not scored" in findings.notes


def test_masks_a_run_could_not_score_with_are_errors(folder):
    save_mask(folder / "masks" / "synth_000001.png", np.zeros((32, 64), np.uint8))  # image is 64 x 64
    save_mask(folder / "masks" / "synth_000009.png", np.full((64, 64), 9, np.uint8))  # 6 classes
    findings = check_data(config(folder, fmt="folder"))
    assert not findings.ok
    (shape,) = split(findings, "train").bad_masks
    (label,) = split(findings, "val").bad_masks
    assert "synth_000001.png" in shape and "32x64" in shape
    assert "synth_000009.png" in label and "label 9" in label


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / "classes.txt").write_text("bird\nbackground\nboat\ncar\ncat\nperson\nplane\n"),
     "the first class must be the background"),
    (lambda root: (root / "tags.csv").write_text("image,tags\nsynth_000000.png,zebra\n"), "'zebra'"),
    (lambda root: (root / "val.txt").write_text(""), "split 'val'"),
    (lambda root: (root / "train.txt").write_text("synth_000099.png\n"), "synth_000099.png"),
])
def test_loader_errors_are_reported_not_raised(folder, breakage, message):
    breakage(folder)
    findings = check_data(config(folder, fmt="folder"))
    assert not findings.ok
    assert any(message in e for e in findings.errors), findings.errors


def test_empty_training_tags_are_an_error(folder):
    (folder / "tags.csv").write_text("image,tags\n")
    findings = check_data(config(folder, fmt="folder"))
    assert "split 'train': no image has a tag, so the classifier has nothing to learn from" in findings.errors


def test_batch_larger_than_the_training_images_is_an_error(tiny_voc):
    findings = check_data(config(tiny_voc, "train_irn.batch_size=16"))
    assert [e for e in findings.errors if e.startswith("train-irn:")] == [
        "train-irn: train_irn.batch_size 16 needs at least 16 images per step, but there are 8 training images: "
        "lower train_irn.batch_size"]


def test_image_sizes_of_mixed_files(folder):
    save_image(folder / "images" / "synth_000004.png", np.zeros((30, 90, 3), np.uint8))  # H 30, W 90
    save_image(folder / "images" / "synth_000006.png", np.zeros((100, 40, 3), np.uint8))
    for image_id in ("synth_000004", "synth_000006"):
        (folder / "masks" / f"{image_id}.png").unlink()
    train = split(check_data(config(folder, fmt="folder")), "train")
    # widths 64 x 6, 90, 40 -> 40 / 64 / 90; heights 64 x 6, 30, 100 -> 30 / 64 / 100
    assert train.sizes == SizeStats((40, 64.0, 90), (30, 64.0, 100))


# --------------------------------------------------------------------------- pure helpers


def test_size_stats_by_hand():
    assert size_stats([]) is None
    assert size_stats([(10, 20), (30, 5), (20, 40)]) == SizeStats((10, 20.0, 30), (5, 20.0, 40))
    assert size_stats([(10, 1), (31, 2)]).width == (10, 20.5, 31)


def test_mask_problem_by_hand():
    mask = np.array([[0, 2], [255, 1]], np.uint8)
    assert mask_problem(None, (2, 2), 2) is None
    assert mask_problem(mask, (2, 2), 2) is None
    assert "label 2 is not a class" in mask_problem(mask, (2, 2), 1)
    assert "2x2 (HxW) but the image is 3x2" in mask_problem(mask, (3, 2), 2)


def test_training_count_drops_untagged_and_applies_the_fraction():
    records = [ImageRecord(str(i), Path(), tags) for i, tags in enumerate([(0,), (0,), (1,), (), (0, 1), (1,)])]
    assert training_count(records, 2, 1.0, seed=0) == 5
    # Half of each class: class 0 has 3 images, class 1 has 3; stratified_fraction keeps at least half of each.
    assert 3 <= training_count(records, 2, 0.5, seed=0) < 5


# --------------------------------------------------------------------------- the command


def test_command_prints_the_report_and_writes_json(tiny_voc, tmp_path, capsys):
    out = tmp_path / "findings.json"
    rc = main(["check-data", str(CONFIG), "--set", f"data.root={tiny_voc}",
               *(a for s in SMALL_BATCHES for a in ("--set", s)), "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "result: 0 errors" in printed and "images per class:" in printed
    content = json.loads(out.read_text())
    assert content["ok"] is True
    assert content["splits"][0]["per_class"] == TRAIN_COUNTS
    assert content["splits"][1]["per_class"] == VAL_COUNTS


def test_command_exits_1_when_a_run_would_stop(folder, capsys):
    image = folder / "images" / "synth_000000.png"
    image.write_bytes(b"not a png")
    rc = main(["check-data", str(CONFIG), "--set", f"data.root={folder}", "--set", "data.format=folder",
               *(a for s in SMALL_BATCHES for a in ("--set", s))])
    captured = capsys.readouterr()
    assert rc == 1
    assert str(image) in captured.out
    assert captured.err.startswith("rpnet: error: check-data: 1 error(s)")


def test_report_text_lists_splits_side_by_side(tiny_voc):
    text = format_findings(check_data(config(tiny_voc)))
    lines = text.splitlines()
    assert lines[1] == "classes (background + 6): bird, boat, car, cat, person, plane"
    person = next(line for line in lines if line.strip().startswith("person"))
    assert person.split() == ["person", "3", "2"]
    assert findings_json(check_data(config(tiny_voc)))["ok"] is True


def test_the_calibration_split_is_described_or_refused_by_name(folder):
    (folder / "calib.txt").write_text("synth_000001.png\nsynth_000003.png\n")
    findings = check_data(config(folder, "data.calibration_split=calib", fmt="folder"))
    assert findings.ok
    assert any("calibration split 'calib': 2 images with masks" in note for note in findings.notes)
    assert any("calibration split 'calib' has 2 images" in warning for warning in findings.warnings)
    (folder / "calib.txt").write_text("synth_000009.png\n")  # a validation image
    findings = check_data(config(folder, "data.calibration_split=calib", fmt="folder"))
    assert not findings.ok
    assert any("not in the training split 'train': synth_000009.png" in error for error in findings.errors)


def test_images_in_no_split_file_are_named_and_read(folder):
    save_image(folder / "images" / "spare.png", np.zeros((64, 64, 3), np.uint8))
    (folder / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    findings = check_data(config(folder, fmt="folder"))
    assert findings.ok  # no run reads them
    assert any("2 images in" in note and "in no split file, so no run uses them: broken.jpg, spare.png" in note
               for note in findings.notes)
    assert any(w.startswith("outside every split: cannot read image") and "broken.jpg" in w for w in findings.warnings)
