"""Ground truth is for scoring only: the whole pipeline, then again on the same images with every
mask file deleted, writes byte-identical CAMs, confident labels, pseudo masks, calibrations and
weights; the run without masks skips the eval stages; and, watched while it runs, no stage but
an eval stage opens a mask file."""

import inspect
import re
import shutil
from pathlib import Path

import PIL.Image

from rpnet import cli, stages
from rpnet.pipeline.graph import scoring_stages

EVAL_STAGES = scoring_stages()
from rpnet.pipeline.runner import run_pipeline
from test_demo import TINY

# What every stage before the eval stages writes: per-image files, calibrations and weights.
OUTPUTS = ("make_cam/cams/*.npz", "make_ir_label/labels/*.png", "make_ir_label/calibration.json",
           "make_pseudo/walks/*.npz", "make_pseudo/masks/*.png", "make_pseudo/calibration.json",
           "train_cam/model.safetensors", "train_irn/model.safetensors", "train_seg/model.safetensors")


def stage_on_stack() -> str | None:
    """The ``rpnet.stages`` module (e.g. ``make_cam``) whose code is running, if any."""
    for frame in inspect.stack(context=0):
        name = frame.frame.f_globals.get("__name__", "")
        if name.startswith("rpnet.stages.") and name != "rpnet.stages.common":
            return name.rsplit(".", 1)[1]
    return None


def outputs(work: Path) -> dict[str, bytes]:
    found = {p.relative_to(work).as_posix(): p.read_bytes() for pattern in OUTPUTS for p in sorted(work.glob(pattern))
             if not p.name.startswith(".")}  # pathlib's glob also matches hidden files
    for pattern in OUTPUTS:  # each kind of output is there: the comparison below is not vacuous
        assert any(Path(key).match(pattern) for key in found), f"{pattern} missing under {work}"
    return found


def test_the_pipeline_without_masks_writes_the_same_bytes_and_only_eval_stages_read_masks(
        tiny_voc, tiny_cfg, tmp_path, monkeypatch):
    with_masks, without = tmp_path / "with_masks", tmp_path / "without"
    shutil.copytree(tiny_voc, with_masks)
    shutil.copytree(tiny_voc, without)
    shutil.rmtree(without / "SegmentationClass")

    readers = []
    real_open = PIL.Image.open

    def watched_open(fp, *args, **kwargs):
        if "SegmentationClass" in Path(str(fp)).parts:
            readers.append(stage_on_stack())
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", watched_open)
    overrides = [o for o in TINY if not o.startswith("device")] + ["data.num_workers=0", "ir_label.workers=0"]
    first = run_pipeline(tiny_cfg(*overrides, f"data.root={with_masks}", f"work_dir={tmp_path / 'a'}"))
    assert [r.action for r in first] == ["ran"] * len(stages.names())
    assert readers and set(readers) <= {"eval_cam", "eval_pseudo", "eval_seg"}, readers

    readers.clear()
    second = run_pipeline(tiny_cfg(*overrides, f"data.root={without}", f"work_dir={tmp_path / 'b'}"))
    assert {r.name: r.action for r in second} == {n: "no masks" if n in EVAL_STAGES else "ran" for n in stages.names()}
    assert readers == []
    assert outputs(tmp_path / "b") == outputs(tmp_path / "a")


def test_a_folder_of_tagged_photos_without_masks_runs_end_to_end(tiny_cfg, tmp_path, capsys):
    """A practitioner's data: the folder layout, no masks at all, two images without tags (negatives)."""
    from rpnet.config import load_config, save_config
    from rpnet.data.synthetic import generate
    from rpnet.pipeline.status import format_status
    from rpnet.stages.train_seg import training_dataset

    root = generate(tmp_path / "photos", n_train=8, n_val=2, size=64, seed=0, fmt="folder")
    shutil.rmtree(root / "masks")
    for name in ("neg_a.png", "neg_b.png"):  # in the train split, not in tags.csv
        shutil.copy(root / "images" / "synth_000000.png", root / "images" / name)
        (root / "train.txt").write_text((root / "train.txt").read_text() + name + "\n")
    config = tmp_path / "photos.yaml"
    save_config(tiny_cfg(*TINY, "data.format=folder", f"data.root={root}", f"work_dir={tmp_path / 'work'}"), config)
    assert cli.main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "eval-cam skipped" in out and "eval-pseudo skipped" in out and "eval-seg skipped" not in out
    rows = dict(re.split(r"\s{2,}", line)[:2] for line in format_status(tmp_path / "work").splitlines()[1:])
    assert rows == {name: "no masks" if name in EVAL_STAGES else "done" for name in stages.names()}
    report = (tmp_path / "work" / "report.html").read_text()
    assert '<section id="gallery">' in report and "CAM: " in report and 'class="legend"' in report
    pages = (tmp_path / "work" / "gallery" / "index.html").read_text()
    assert '"synth_000000": 1' in pages and "neg_a" not in pages  # tagged images only
    cfg = load_config(tmp_path / "work" / "config.yaml")
    negatives = [i for i, r in enumerate(training_dataset(cfg).records) if r.id.startswith("neg_")]
    assert len(negatives) == 2  # segmentation trains on the untagged images ...
    for i in negatives:  # ... as background everywhere
        assert not training_dataset(cfg).records[i].tags
        assert (PIL.Image.open(tmp_path / "work" / "make_pseudo" / "masks" / f"{training_dataset(cfg).records[i].id}.png")
                .getextrema() == (0, 0))
