import os
import subprocess
import sys

import pytest

from rpnet.cli import main
from rpnet.stages import names

STAGES = names()


def test_help_lists_every_stage(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name in ["synth", *STAGES]:
        assert name in out


def test_bad_override_is_one_line_on_stderr_and_nonzero(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 1\n")
    assert main(["train-cam", str(cfg), "--set", "model.nope=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.nope" in err[0]


def test_python_dash_m_is_the_same_command():
    r = subprocess.run([sys.executable, "-m", "rpnet", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train-cam" in r.stdout


def test_segmentation_stages_follow_eval_pseudo_and_predict_export_have_help(capsys):
    names = list(STAGES)
    assert names[names.index("eval-pseudo") + 1:names.index("eval-pseudo") + 3] == ["train-seg", "eval-seg"]
    for command in ("predict", "export"):
        try:
            main([command, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        assert "--weights" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["predict", "x.png", "--weights", "w", "--out", "o", "--scales", "0"], "--scales: must be > 0, got 0"),
    (["predict", "x.png", "--weights", "w", "--out", "o", "--scales", "1", "-0.5"], "--scales: must be > 0"),
    (["predict", "x.png", "--weights", "w", "--out", "o", "--tile-size", "0"], "--tile-size: must be >= 1"),
    (["predict", "x.png", "--weights", "w", "--out", "o", "--tile-overlap", "-1"], "--tile-overlap: must be >= 0"),
    (["predict", "x.png", "--weights", "w", "--out", "o", "--max-side", "0"], "--max-side: must be >= 1"),
    (["synth", "d", "--n-train", "0"], "--n-train: must be >= 1, got 0"),
    (["synth", "d", "--n-val", "-1"], "--n-val: must be >= 0"),
    (["synth", "d", "--size", "abc"], "--size: not an integer: 'abc'"),
])
def test_out_of_range_flags_are_refused_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_stage_commands_record_their_runs_as_rpnet_run_does(tiny_cfg, tmp_path, capsys):
    from rpnet.config import save_config
    from rpnet.pipeline.runner import run_pipeline
    from rpnet.pipeline.state import stage_statuses

    cfg = tiny_cfg("train_cam.max_steps=1", "model.prototypes=false")
    save_config(cfg, tmp_path / "c.yaml")
    for stage in ("train-cam", "make-cam"):
        assert main([stage, str(tmp_path / "c.yaml")]) == 0
    assert f"rpnet make-cam: done; `rpnet status {cfg.work_dir}`" in capsys.readouterr().out
    states = {name: s.state for name, s in stage_statuses(cfg).items()}
    assert states["train-cam"] == states["make-cam"] == "done" and states["eval-cam"] == "missing"
    assert [r.action for r in run_pipeline(cfg, until="make-cam")] == ["skipped", "skipped"]
    assert main(["train-cam", str(tmp_path / "c.yaml")]) == 0  # rerun by hand: a new run id ...
    assert stage_statuses(cfg)["make-cam"].state == "stale"  # ... so the stage below it is out of date


def test_nan_and_infinite_flags_are_refused_and_a_closed_pipe_is_no_traceback(tmp_path, capsys):
    from rpnet import cli

    for bad in ("nan", "inf"):
        with pytest.raises(SystemExit):
            cli.main(["predict", "--weights", "w.safetensors", "x.png", "--out", str(tmp_path), "--scales", bad])
        assert "must be a finite number" in capsys.readouterr().err

    code = ("import sys; from rpnet import cli\n"
            "def closed(args): raise BrokenPipeError\n"
            "cli._run_synth = closed\n"
            "sys.exit(cli.main(['synth', 'unused']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr


def test_a_full_disk_or_a_read_only_folder_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    from rpnet import cli

    def fails(code, name):
        def run(args):
            raise OSError(code, os.strerror(code), name)
        return run

    for code, words in ((errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only file system"),
                        (errno.ENOTDIR, "a file stands where rpnet needs a folder")):
        monkeypatch.setattr(cli, "_run_synth", fails(code, "/w/train_cam/last.pt"))
        assert cli.main(["synth", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("rpnet: error: /w/train_cam/last.pt: ") and words in err and "\n" == err[-1]

    def torch_full(args):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0 basic_ios::clear")

    monkeypatch.setattr(cli, "_run_synth", torch_full)
    assert cli.main(["synth", str(tmp_path)]) == 1
    assert "is the disk full?" in capsys.readouterr().err
