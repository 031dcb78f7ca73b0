"""rpnet.workdir: one writer per work dir, and nothing deleted that rpnet did not write."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from rpnet.config import dump_config, load_config
from rpnet.workdir import (LOCK_FILE, MARK_FILE, NotOurs, WorkDirBusy, claim_work_dir, is_ours, remove_ours,
                           work_dir_lock)

HOLD = """
import sys, time
from rpnet.workdir import work_dir_lock
with work_dir_lock(sys.argv[1], "rpnet run held.yaml"):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_another_process(folder):
    """A child process that holds ``folder``'s lock until killed; returns it once it holds it."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_with_the_holder_named_and_a_killed_holder_s_lock_is_taken_over(tmp_path):
    child = hold_in_another_process(tmp_path)
    try:
        with pytest.raises(WorkDirBusy) as refused:
            with work_dir_lock(tmp_path):
                pass
        message = str(refused.value)
        assert f"pid {child.pid}" in message and socket.gethostname() in message
        assert "rpnet run held.yaml" in message and "since 20" in message  # the start time, ISO
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = json.loads((tmp_path / LOCK_FILE).read_text())
    assert left["pid"] == child.pid  # kill -9 leaves the holder's record behind ...
    with work_dir_lock(tmp_path, "second") as path:  # ... but not the lock: taken over at once
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: no holder named


def test_the_lock_is_re_entrant_in_one_process_and_held_until_the_outer_block_ends(tmp_path):
    with work_dir_lock(tmp_path):
        with work_dir_lock(tmp_path):
            pass
        child = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert child.returncode != 0 and "WorkDirBusy" in child.stderr  # still held after the inner block
    child = hold_in_another_process(tmp_path)  # free after the outer one
    child.kill()
    child.wait()


def test_claim_accepts_a_folder_without_files_rpnet_would_overwrite(tmp_path):
    (tmp_path / "train_cam").mkdir()
    (tmp_path / "train_cam" / "model.safetensors").write_bytes(b"copied weights")
    claim_work_dir(tmp_path)  # a stage folder is checked when it would be deleted, not here
    assert (tmp_path / MARK_FILE).is_file() and not is_ours(tmp_path / "train_cam")


def test_claim_marks_a_new_or_empty_folder(tmp_path):
    claim_work_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    claim_work_dir(tmp_path / "empty")
    assert (tmp_path / "new" / MARK_FILE).is_file() and (tmp_path / "empty" / MARK_FILE).is_file()
    (tmp_path / "new" / "metrics.json").write_text("{}")
    claim_work_dir(tmp_path / "new")  # marked: ours, whatever it holds


def test_claim_refuses_a_folder_of_the_user_s_and_changes_nothing_in_it(tmp_path):
    (tmp_path / "train_cam").mkdir()
    (tmp_path / "train_cam" / "precious.txt").write_text("x")
    (tmp_path / "config.yaml").write_text("# my notes\nseed: 1\n")
    with pytest.raises(NotOurs, match="already holds config.yaml, which rpnet did not write"):
        claim_work_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "train_cam"]
    assert (tmp_path / "config.yaml").read_text() == "# my notes\nseed: 1\n"
    with pytest.raises(NotOurs, match="is a file"):
        claim_work_dir(tmp_path / "config.yaml")


def test_claim_adopts_a_work_dir_written_before_the_marks(tmp_path):
    by_rpnet = tmp_path / "a"
    by_rpnet.mkdir()
    (by_rpnet / "config.yaml").write_text(dump_config(load_config(None, [f"work_dir={by_rpnet}"])))
    claim_work_dir(by_rpnet)  # its config.yaml is rpnet's own dump
    with_records = tmp_path / "b"
    (with_records / "make_cam").mkdir(parents=True)
    (with_records / "make_cam" / "done.json").write_text("{}")
    claim_work_dir(with_records)  # a stage folder with the runner's record
    assert (by_rpnet / MARK_FILE).is_file() and (with_records / MARK_FILE).is_file()


def test_remove_ours_deletes_marked_folders_only(tmp_path):
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "precious.txt").write_text("x")
    with pytest.raises(NotOurs, match="precious.txt"):
        remove_ours(tmp_path / "theirs")
    assert (tmp_path / "theirs" / "precious.txt").read_text() == "x"
    for name, record in (("marked", MARK_FILE), ("recorded", "started.json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / record).write_text("")
        (tmp_path / name / "cam.npz").write_text("")
        assert is_ours(tmp_path / name)
        remove_ours(tmp_path / name)
        assert not (tmp_path / name).exists()
    remove_ours(tmp_path / "absent")  # nothing to do


def test_a_lock_file_is_not_a_foreign_file(tmp_path):
    with work_dir_lock(tmp_path):
        pass
    claim_work_dir(tmp_path)  # only the (released) lock file in it


def test_deleting_the_lock_file_during_a_run_lets_no_second_writer_in(tmp_path):
    with work_dir_lock(tmp_path, command="rpnet run first.yaml"):
        (tmp_path / LOCK_FILE).unlink()  # a clean-up script, or a user tidying the folder
        code = ("import sys; from rpnet.workdir import work_dir_lock\n"
                f"with work_dir_lock({str(tmp_path)!r}): pass")
        second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert second.returncode != 0 and "is in use by" in second.stderr
