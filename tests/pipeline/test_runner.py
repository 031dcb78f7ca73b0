"""The runner on a fake pipeline (fast), then once on the real first three stages of the tiny dataset."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from rpnet.stages import STAGES as ALL_STAGES
from rpnet.errors import ConfigError
from rpnet.workdir import NotOurs
from rpnet.io import load_npz
from rpnet.pipeline import run_pipeline, stage_statuses
from rpnet.pipeline.runner import stage_range
from rpnet.layout import WorkDir

FAKE_ORDER = ("train-cam", "make-cam", "eval-cam", "make-ir-label", "train-irn", "make-pseudo", "eval-pseudo")


class Killed(RuntimeError):
    """Raised to stop the real make-cam half-way."""

IRN_AND_BELOW = ["make-ir-label", "train-irn", "make-pseudo", "eval-pseudo"]


def test_first_run_runs_every_stage_once_and_a_rerun_runs_none(fake, fake_cfg):
    cfg = fake_cfg()
    results = run_pipeline(cfg)
    assert fake.ran() == list(FAKE_ORDER)
    assert [(r.name, r.action) for r in results] == [(n, "ran") for n in FAKE_ORDER]
    statuses = stage_statuses(cfg)
    for name in FAKE_ORDER:
        record = json.loads((cfg.work_dir / name.replace("-", "_") / "done.json").read_text())
        assert record["fingerprint"] == statuses[name].fingerprint and statuses[name].state == "done"
        assert not (cfg.work_dir / name.replace("-", "_") / "started.json").exists()
    assert results[2].metrics == {"cam_miou": 15.0}  # eval_cam.threshold 0.15, in percent
    assert (cfg.work_dir / "config.yaml").is_file()

    again = run_pipeline(cfg)
    assert fake.ran() == []
    assert [r.action for r in again] == ["skipped"] * len(FAKE_ORDER)
    assert again[2].metrics == {"cam_miou": 15.0}


def test_a_changed_section_reruns_its_stages_and_those_below_only(fake, fake_cfg):
    run_pipeline(fake_cfg())
    fake.ran()
    cfg = fake_cfg("ir_label.fg_threshold=0.4")  # read by make-ir-label and train-irn
    run_pipeline(cfg)
    assert fake.ran() == IRN_AND_BELOW
    fresh = fake_cfg("ir_label.fg_threshold=0.4", work="fresh")
    run_pipeline(fresh)
    assert fake.outputs(cfg.work_dir) == fake.outputs(fresh.work_dir)  # no stale item kept
    fake.ran()

    cfg = fake_cfg("ir_label.fg_threshold=0.4", "eval_cam.num_pictures=2", "eval_cam.threshold=0.25")
    run_pipeline(cfg)
    assert fake.ran() == ["eval-cam", "make-pseudo", "eval-pseudo"]  # make-pseudo reads eval_cam.threshold only
    assert json.loads((cfg.work_dir / "metrics.json").read_text())["cam_miou"] == 25.0
    run_pipeline(fake_cfg("ir_label.fg_threshold=0.4", "eval_cam.num_pictures=3", "eval_cam.threshold=0.25"))
    assert fake.ran() == ["eval-cam", "eval-pseudo"]


def test_runtime_keys_rerun_nothing(fake, fake_cfg):
    run_pipeline(fake_cfg())
    fake.ran()
    run_pipeline(fake_cfg("data.num_workers=3", "ir_label.workers=1", "train_cam.log_every=7"))
    assert fake.ran() == []


def test_from_forces_a_rerun_and_until_stops(fake, fake_cfg):
    cfg = fake_cfg()
    results = run_pipeline(cfg, until="eval-cam")
    assert fake.ran() == ["train-cam", "make-cam", "eval-cam"] and len(results) == 3
    assert [s.state for s in stage_statuses(cfg).values()] == ["done"] * 3 + ["missing"] * 4
    run_pipeline(cfg)
    assert fake.ran() == IRN_AND_BELOW
    run_pipeline(cfg, start="make-pseudo")
    assert fake.ran() == ["make-pseudo", "eval-pseudo"]
    run_pipeline(cfg, start="make-cam", until="eval-cam")
    assert fake.ran() == ["make-cam", "eval-cam"]
    # make-cam ran again, so what was made from its old outputs is stale though its config is not.
    states = {name: s.state for name, s in stage_statuses(cfg).items()}
    assert states["make-ir-label"] == "stale" and states["eval-pseudo"] == "stale" and states["train-cam"] == "done"
    run_pipeline(cfg)
    assert fake.ran() == IRN_AND_BELOW


def test_stage_names_are_checked(fake, fake_cfg):
    with pytest.raises(ConfigError, match="unknown stage 'make-cams'; choose from train-cam, make-cam"):
        run_pipeline(fake_cfg(), start="make-cams")
    with pytest.raises(ConfigError, match="--from eval-pseudo comes after --until make-cam"):
        stage_range(list(FAKE_ORDER), "eval-pseudo", "make-cam")


def test_a_stage_killed_half_way_is_continued_and_ends_as_an_uninterrupted_run(fake, fake_cfg):
    whole = fake_cfg(work="whole")
    run_pipeline(whole)
    fake.ran()

    cfg = fake_cfg(work="killed")
    fake.kill["make-ir-label"] = 2
    with pytest.raises(fake.Killed):
        run_pipeline(cfg)
    assert fake.ran() == ["train-cam", "make-cam", "eval-cam", "make-ir-label"]
    assert stage_statuses(cfg)["make-ir-label"].state == "partial"
    assert sorted(p.name for p in (cfg.work_dir / "make_ir_label").glob("item*")) == ["item0.txt", "item1.txt"]

    results = run_pipeline(cfg)
    assert fake.calls == [("make-ir-label", True), ("train-irn", False), ("make-pseudo", False),
                          ("eval-pseudo", False)]
    assert results[3].action == "resumed"
    assert fake.outputs(cfg.work_dir) == fake.outputs(whole.work_dir)
    assert json.loads((cfg.work_dir / "metrics.json").read_text()) == json.loads(
        (whole.work_dir / "metrics.json").read_text())


def test_a_killed_stage_whose_config_changed_starts_afresh(fake, fake_cfg):
    fake.kill["make-ir-label"] = 3
    with pytest.raises(fake.Killed):
        run_pipeline(fake_cfg())
    fake.ran()
    cfg = fake_cfg("ir_label.bg_threshold=0.1")
    assert stage_statuses(cfg)["make-ir-label"].state == "stale"
    run_pipeline(cfg)
    assert fake.calls[0] == ("make-ir-label", False)
    texts = {p.read_text() for p in (cfg.work_dir / "make_ir_label").glob("item*.txt")}
    assert len(texts) == 1 and '"bg_threshold": 0.1' in texts.pop()  # none of the three old items kept


def test_a_folder_made_by_a_stage_command_is_continued_when_its_config_matches(fake, fake_cfg):
    cfg = fake_cfg()
    run_pipeline(cfg, until="train-cam")
    fake.run("make-cam", cfg, resume=False)  # as `rpnet make-cam CONFIG` would: no runner records
    fake.ran()
    run_pipeline(cfg, until="make-cam")
    assert fake.calls == [("make-cam", True)]

    shutil.rmtree(cfg.work_dir / "make_cam")
    fake.run("make-cam", cfg, resume=False)
    fake.calls.clear()
    other = fake_cfg("make_cam.flip=false")  # not the config the folder was made with
    assert stage_statuses(other)["make-cam"].state == "stale"
    run_pipeline(other, until="make-cam")
    assert fake.calls == [("make-cam", False)]


def test_a_rerun_stage_drops_its_old_metrics_until_it_has_new_ones(fake, fake_cfg):
    cfg = fake_cfg()
    run_pipeline(cfg)
    fake.kill["eval-cam"] = 0
    with pytest.raises(fake.Killed):
        run_pipeline(fake_cfg("eval_cam.threshold=0.3"))
    metrics = json.loads((cfg.work_dir / "metrics.json").read_text())
    assert "cam_miou" not in metrics and metrics["pseudo_miou"] == 25.0  # eval-pseudo has not rerun yet


def test_a_work_dir_of_the_user_s_is_refused_before_anything_is_written_or_deleted(fake, fake_cfg, tmp_path):
    work = tmp_path / "work"
    (work / "train_cam").mkdir(parents=True)
    (work / "train_cam" / "precious.txt").write_text("x")
    (work / "config.yaml").write_text("# mine\n")
    with pytest.raises(NotOurs, match="rpnet did not write"):
        run_pipeline(fake_cfg())
    assert fake.ran() == []
    assert (work / "train_cam" / "precious.txt").read_text() == "x" and (work / "config.yaml").read_text() == "# mine\n"
    assert sorted(p.name for p in work.rglob("*")) == ["config.yaml", "precious.txt", "train_cam"]


def test_a_stage_folder_of_the_user_s_in_a_new_work_dir_is_not_deleted(fake, fake_cfg, tmp_path):
    (tmp_path / "work" / "train_cam").mkdir(parents=True)
    (tmp_path / "work" / "train_cam" / "precious.txt").write_text("x")
    with pytest.raises(NotOurs, match="precious.txt"):
        run_pipeline(fake_cfg())
    assert fake.ran() == [] and (tmp_path / "work" / "train_cam" / "precious.txt").read_text() == "x"


def test_a_stale_stage_folder_holding_the_user_s_files_is_not_deleted(fake, fake_cfg):
    cfg = fake_cfg()
    run_pipeline(cfg, until="train-cam")
    (cfg.work_dir / "make_cam").mkdir()  # made by the user in rpnet's work dir, never by a stage
    (cfg.work_dir / "make_cam" / "notes.txt").write_text("x")
    run_pipeline(fake_cfg("train_cam.lr=0.5"), until="train-cam")  # train-cam reruns: make-cam is stale
    with pytest.raises(NotOurs, match="notes.txt"):
        run_pipeline(fake_cfg("train_cam.lr=0.5"), until="make-cam")
    assert (cfg.work_dir / "make_cam" / "notes.txt").read_text() == "x"


def later(path: Path, text: str) -> None:
    """Write ``path`` as a user would, a while after the run (file times tick every few ms)."""
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(stamp, stamp))


def test_a_user_file_in_every_stage_folder_and_an_edited_output_survive_a_changed_setting(fake, fake_cfg):
    cfg = fake_cfg()
    run_pipeline(cfg)
    fake.ran()
    for name in FAKE_ORDER:  # after the run: a note in each stage folder
        later((WorkDir(cfg.work_dir).stage(name) / "precious.txt"), name)
    with pytest.raises(NotOurs, match=r"1 file\(s\) in it were put there or changed after rpnet wrote it \(precious.txt\)"):
        run_pipeline(fake_cfg("train_cam.lr=0.05"))
    assert fake.ran() == []  # refused before train-cam reran
    for name in FAKE_ORDER:
        assert (WorkDir(cfg.work_dir).stage(name) / "precious.txt").read_text() == name
        (WorkDir(cfg.work_dir).stage(name) / "precious.txt").unlink()
    # an output edited by hand (a corrected mask, here an item file) is the user's too
    item = WorkDir(cfg.work_dir).stage("make-pseudo") / "item0.txt"
    later(item, "corrected by hand")
    with pytest.raises(NotOurs, match="item0.txt"):
        run_pipeline(fake_cfg("pseudo.beta=8"))
    assert item.read_text() == "corrected by hand"
    item.unlink()
    run_pipeline(fake_cfg("pseudo.beta=8"))  # moved away: the stage is deleted and reruns
    assert fake.ran() == ["make-pseudo", "eval-pseudo"] and item.is_file()


def test_a_kill_while_a_stale_stage_is_deleted_leaves_nothing_in_the_way(fake, fake_cfg, monkeypatch):
    from rpnet import workdir

    cfg = fake_cfg()
    run_pipeline(cfg)
    fake.ran()
    real_rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):  # the process dies after the rename, half-way through the deletion
        (Path(path) / workdir.MARK_FILE).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(workdir.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(fake_cfg("pseudo.beta=8"))
    monkeypatch.setattr(workdir.shutil, "rmtree", real_rmtree)
    assert not WorkDir(cfg.work_dir).stage("make-pseudo").exists()  # renamed away, not half there
    assert [p.name for p in cfg.work_dir.iterdir() if p.name.startswith(workdir.TRASH_PREFIX)]
    run_pipeline(fake_cfg("pseudo.beta=8"))
    assert fake.ran() == ["make-pseudo", "eval-pseudo"]
    assert not [p for p in cfg.work_dir.iterdir() if p.name.startswith(workdir.TRASH_PREFIX)]


def test_a_corrupt_or_missing_output_redoes_the_stage_that_wrote_it_and_those_below(fake, fake_cfg):
    cfg = fake_cfg()
    run_pipeline(cfg)
    fake.ran()
    reference = fake.outputs(cfg.work_dir)
    cam = WorkDir(cfg.work_dir).stage("make-cam") / "item0.txt"
    cam.write_text(fake.CORRUPT)
    # make-pseudo reruns (a changed setting), meets the corrupt CAM: make-cam is continued (the file redone),
    # and every stage below it runs again
    run_pipeline(fake_cfg("pseudo.beta=8"))
    assert ("make-cam", True) in fake.calls  # continued, not started afresh
    assert fake.ran() == ["make-pseudo", "make-cam", *FAKE_ORDER[2:]]
    assert cam.read_text() != fake.CORRUPT
    cam.unlink()  # deleted by hand: the same
    run_pipeline(fake_cfg("pseudo.beta=9"))
    assert fake.ran() == ["make-pseudo", "make-cam", *FAKE_ORDER[2:]]
    assert stage_statuses(fake_cfg("pseudo.beta=9"))["make-cam"].state == "done"
    assert set(fake.outputs(cfg.work_dir)) == set(reference)


def test_a_batch_larger_than_the_data_is_refused_before_the_first_stage_runs(fake, fake_cfg, monkeypatch):
    from rpnet.stages import train_seg

    from rpnet import stages

    fake_seg = fake.module("train-seg")  # the real check of the real stage, the fake's run
    fake_seg.check = train_seg.check
    fake.modules["train-seg"] = fake_seg
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES, next(s for s in ALL_STAGES if s.name == "train-seg")))
    with pytest.raises(ConfigError, match="train_seg.batch_size 64 needs at least 64 images.* there are 8"):
        run_pipeline(fake_cfg("train_seg.batch_size=64"))
    assert fake.ran() == []


@pytest.mark.slow
def test_real_make_cam_killed_half_way_resumes_to_the_same_cams(tiny_cfg, monkeypatch):
    """train-cam, make-cam, eval-cam on the tiny dataset; make-cam dies after 3 of its 8 images."""
    from rpnet.stages import make_cam

    cfg = tiny_cfg("make_cam.batch_size=1", "eval_cam.num_pictures=0", "train_cam.max_steps=1")
    real_save, saved = make_cam.save_cams, []

    def dying_save(path, cams):
        if len(saved) == 3:
            raise Killed("make-cam killed")
        saved.append(path)
        return real_save(path, cams)

    monkeypatch.setattr(make_cam, "save_cams", dying_save)
    with pytest.raises(Killed):
        run_pipeline(cfg, until="eval-cam")
    cams = WorkDir(cfg.work_dir).cams
    assert len(list(cams.glob("*.npz"))) == 3 and stage_statuses(cfg)["make-cam"].state == "partial"
    monkeypatch.setattr(make_cam, "save_cams", real_save)

    trained = (cfg.work_dir / "train_cam" / "done.json").read_text()
    results = run_pipeline(cfg, until="eval-cam")
    assert [r.action for r in results] == ["skipped", "resumed", "ran"]
    assert (cfg.work_dir / "train_cam" / "done.json").read_text() == trained
    resumed = {p.name: load_npz(p) for p in sorted(cams.glob("*.npz"))}
    miou = json.loads((cfg.work_dir / "metrics.json").read_text())["cam_miou"]

    run_pipeline(cfg, start="make-cam", until="eval-cam")  # the same weights, make-cam uninterrupted
    fresh = {p.name: load_npz(p) for p in sorted(cams.glob("*.npz"))}
    assert list(resumed) == list(fresh) and len(fresh) == 8
    for name, arrays in fresh.items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(resumed[name][key], value)
    assert json.loads((cfg.work_dir / "metrics.json").read_text())["cam_miou"] == miou


def test_a_continued_stage_s_time_counts_its_stopped_runs_too(fake, fake_cfg, monkeypatch):
    import itertools

    from rpnet.pipeline import runner

    ticks = itertools.count(0, 10)  # every clock reading 10 s after the last
    monkeypatch.setattr(runner.time, "perf_counter", lambda: next(ticks))
    cfg = fake_cfg()
    fake.kill["make-cam"] = 1
    with pytest.raises(fake.Killed):
        run_pipeline(cfg)
    started = json.loads((WorkDir(cfg.work_dir).stage("make-cam") / "started.json").read_text())
    assert started["seconds"] == 10
    results = {r.name: r for r in run_pipeline(cfg)}
    assert results["make-cam"].action == "resumed" and results["make-cam"].seconds == 20  # 10 before + 10 now
    assert json.loads((WorkDir(cfg.work_dir).stage("make-cam") / "done.json").read_text())["seconds"] == 20
