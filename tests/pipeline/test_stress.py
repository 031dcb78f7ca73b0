"""`rpnet run` as separate processes, as users start them: two at once on one work dir (one runs, the
other is refused), and one killed with SIGKILL inside every stage in turn and started again until it
finishes, which must end with the outputs of a run never interrupted, byte for byte; then a changed
setting with a user's file in every stage folder (refused, every file kept), and a rerun killed at
random moments and left with a half-deleted stage folder, which the next run finishes."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpnet import stages
from rpnet.config import save_config
from rpnet.layout import stage_folder
from rpnet.workdir import MARK_FILE, TRASH_PREFIX
from test_demo import TINY
from test_ground_truth_free import outputs

# Long enough per stage that a kill lands inside it: two epochs of each training stage.
SETTINGS = [o for o in TINY if "max_steps" not in o and not o.startswith("device")] + [
    "device=cpu", "data.num_workers=0", "train_cam.epochs=2", "train_irn.epochs=2", "train_seg.epochs=2"]


def rpnet_run(config: Path) -> subprocess.Popen:
    """``rpnet run CONFIG`` in a process group of its own (so that a kill takes all of it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "rpnet", "run", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


def write_config(tiny_cfg, tmp_path: Path, name: str, *changes: str) -> Path:
    path = tmp_path / f"{name}{'-changed' if changes else ''}.yaml"
    save_config(tiny_cfg(*SETTINGS, f"work_dir={tmp_path / name}", *changes), path)
    return path


def in_progress(work: Path) -> str | None:
    """The stage whose folder has a start record and no finish record: the one running."""
    for name in stages.names():
        folder = work / stage_folder(name)
        if (folder / "started.json").is_file() and not (folder / "done.json").is_file():
            return name
    return None


@pytest.mark.slow
def test_two_runs_started_together_one_runs_the_other_is_refused(tiny_cfg, tmp_path):
    config = write_config(tiny_cfg, tmp_path, "work")
    first, second = rpnet_run(config), rpnet_run(config)
    results = [(p.wait(timeout=600), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, _, err in results if code == 1)
    winner = first if results[0][0] == 0 else second
    assert f"is in use by pid {winner.pid} on host" in refused and "rpnet run" in refused
    assert "Traceback" not in refused
    for name in stages.names():  # the run that went ahead is complete and untouched by the other
        assert (tmp_path / "work" / stage_folder(name) / "done.json").is_file()


@pytest.mark.slow
def test_a_run_killed_in_every_stage_resumes_to_the_bytes_of_an_uninterrupted_run(tiny_cfg, tmp_path):
    reference = write_config(tiny_cfg, tmp_path, "reference")
    done = rpnet_run(reference)
    assert done.wait(timeout=600) == 0, done.communicate()

    config = write_config(tiny_cfg, tmp_path, "killed")
    work = tmp_path / "killed"
    rng = random.Random(0)
    killed_in = []
    for target in stages.names():  # one kill per stage, at a random moment after it has started
        run = rpnet_run(config)
        while run.poll() is None and not (work / stage_folder(target) / "started.json").is_file():
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if run.poll() is not None:  # finished (or failed) before the kill
            assert run.returncode == 0, run.communicate()
            break
        stage = in_progress(work)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        killed_in.append(stage)
    final = rpnet_run(config)
    assert final.wait(timeout=600) == 0, final.communicate()

    assert len(killed_in) >= 5, killed_in
    assert {"train-cam", "train-irn", "train-seg"} <= set(killed_in), killed_in
    assert outputs(work) == outputs(tmp_path / "reference")
    assert not [p for p in work.rglob(".*") if ".tmp" in p.name]  # no half-written file left by a kill
    metrics = [json.loads((w / "metrics.json").read_text()) for w in (work, tmp_path / "reference")]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_user_files_survive_a_changed_setting_and_a_kill_while_deleting_is_finished_by_the_next_run(
        tiny_cfg, tmp_path):
    config = write_config(tiny_cfg, tmp_path, "work")
    run = rpnet_run(config)
    assert run.wait(timeout=600) == 0, run.communicate()
    work = tmp_path / "work"
    notes = [work / stage_folder(name) / "precious.txt" for name in stages.names()]
    for note in notes:
        note.write_text("keep")
    changed = write_config(tiny_cfg, tmp_path, "work", "train_cam.lr=0.02")  # every stage is stale
    run = rpnet_run(changed)
    code, (_, err) = run.wait(timeout=600), run.communicate()
    assert code == 1 and "Traceback" not in err, err
    assert f"{work / stage_folder('train-cam')} must be rerun" in err and "precious.txt" in err
    assert all(note.read_text() == "keep" for note in notes)
    for note in notes:
        note.unlink()

    rng = random.Random(1)
    for _ in range(3):  # killed at random moments while the stale stages are deleted and rerun
        run = rpnet_run(changed)
        time.sleep(rng.uniform(0.5, 4.0))
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    # what a kill inside the deletion leaves (a moment too short to hit by chance): the stage folder renamed
    # to the trash name, its mark and part of its files gone
    folder = work / stage_folder("eval-seg")
    if folder.is_dir():
        trash = folder.rename(work / f"{TRASH_PREFIX}{folder.name}-1")
        (trash / MARK_FILE).unlink()
        next(p for p in sorted(trash.iterdir()) if p.is_file()).unlink()
    final = rpnet_run(changed)
    assert final.wait(timeout=600) == 0, final.communicate()
    assert not [p.name for p in work.iterdir() if p.name.startswith(TRASH_PREFIX)]
    for name in stages.names():
        assert (work / stage_folder(name) / "done.json").is_file()
    assert json.loads((work / "metrics.json").read_text())["seg_miou"] is not None
