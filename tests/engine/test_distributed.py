"""Many ranks: torchrun's world, sharding, reductions, and train-cam / make-cam under real torchrun.

The two end-to-end tests launch ``python -m torch.distributed.run --nproc-per-node 2 -m rpnet ...``
on CPU (gloo backend) with the tiny synthetic set; each launch costs ~10-15 s on 2 cores.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rpnet.config import save_config
from rpnet.engine import distributed as D
from rpnet.engine.distributed import epoch_batches
from rpnet.engine.trainer import _checkpoint_on_every_rank
from rpnet.errors import ConfigError, RpnetError
from rpnet.io import load_npz, read_jsonl
from rpnet.models.backbones import FrozenBatchNorm2d
from rpnet.stages import make_cam, train_cam
from rpnet.layout import WorkDir

TORCHRUN_TIMEOUT_S = 240


# --------------------------------------------------------------------------- one process


def test_env_world_reads_torchrun_variables():
    w = D.env_world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (w.rank, w.size, w.local_rank, w.is_main, w.distributed) == (3, 4, 1, False, True)
    assert D.env_world({}) == D.World(rank=0, size=1, local_rank=0)
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=4"):
        D.env_world({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        D.env_world({"WORLD_SIZE": "two"})


def test_outside_torchrun_there_is_one_rank_and_collectives_are_identities():
    assert D.world() == D.World()
    matrix = np.arange(9).reshape(3, 3)
    assert D.all_reduce_sum(matrix) is matrix
    model = nn.Linear(2, 2)
    assert D.wrap_model(model, torch.device("cpu"), sync_bn=True) is model
    with D.session("auto", "cpu") as w:  # no WORLD_SIZE in this process's environment
        assert w == D.World()


def test_backend_follows_the_device_and_lists_choices():
    assert D.choose_backend("auto", "cuda") == "nccl"
    assert D.choose_backend("auto", "cpu") == "gloo"
    assert D.choose_backend("gloo", "cuda") == "gloo"
    with pytest.raises(ConfigError, match="nccl needs CUDA"):
        D.choose_backend("nccl", "cpu")
    with pytest.raises(ConfigError, match=r"\['auto', 'gloo', 'nccl'\]"):
        D.choose_backend("mpi", "cpu")


def test_shards_are_strided_disjoint_and_cover_every_item():
    shards = [D.shard(list(range(10)), D.World(rank=r, size=3)) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert D.shard("abc", D.World(rank=1, size=5)) == ["b"]
    assert D.shard(range(4), D.World(rank=4, size=5)) == []


def test_global_batch_splits_into_whole_groups_per_rank():
    assert D.split_batch(16, 8, multiple=2) == 2
    assert D.split_batch(32, 1) == 32
    with pytest.raises(ConfigError, match="train_cam.batch_size 8 must be a multiple of 16"):
        D.split_batch(8, 8, multiple=2, key="train_cam.batch_size")  # one image per rank would split a pair
    with pytest.raises(ConfigError, match="multiple of 4"):
        D.split_batch(6, 4)


def test_sync_batchnorm_replaces_trainable_bn_and_keeps_frozen_bn():
    frozen = FrozenBatchNorm2d(3)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.Sequential(frozen))
    model[1].running_mean.fill_(0.5)
    model[1].weight.requires_grad_(False)
    converted = D.convert_sync_batchnorm(model)
    assert type(converted[1]) is nn.SyncBatchNorm and converted[2][0] is frozen
    assert torch.equal(converted[1].running_mean, torch.full((3,), 0.5))
    assert not converted[1].weight.requires_grad and converted[1].bias.requires_grad


def test_weights_digest_sees_one_changed_bit():
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert D.weights_digest(a) == D.weights_digest(b)
    with torch.no_grad():
        b.weight[0, 0] = torch.nextafter(b.weight[0, 0], torch.tensor(10.0))
    assert D.weights_digest(a) != D.weights_digest(b)


def test_rank_zero_keeps_the_seed_and_other_ranks_get_their_own():
    assert D.rank_seed(7, 0) == 7
    seeds = {D.rank_seed(7, r) for r in range(1, 5)} | {D.rank_seed(8, 1)}
    assert len(seeds) == 5 and 7 not in seeds


# --------------------------------------------------------------------------- two processes, gloo


def _collectives_worker(rank: int, init_file: str, tmp: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        assert D.world() == D.World(rank=rank, size=2, local_rank=0)
        # Each rank scores its own images; the sums are the whole set's confusion matrix.
        mine = np.array([[rank + 1, 0], [2 * rank, 5]], dtype=np.int64)
        total = D.all_reduce_sum(mine)
        assert total.dtype == np.int64 and total.tolist() == [[3, 0], [2, 10]]
        assert mine.tolist() == [[rank + 1, 0], [2 * rank, 5]]  # the input is left alone
        means = D.mean_across_ranks({"loss": torch.tensor(float(rank)), "l_c": torch.tensor(2.0 + 2 * rank)})
        assert means == {"loss": 0.5, "l_c": 3.0}
        # A checkpoint that rank 1 cannot see (no shared work_dir) stops both ranks.
        ckpt = Path(tmp) / f"rank{rank}" / "last.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            ckpt.write_bytes(b"x")
        try:
            _checkpoint_on_every_rank(ckpt)
            raise AssertionError("a checkpoint seen by one rank of two was accepted")
        except RpnetError as exc:
            assert "visible to 1 of 2 ranks" in str(exc)
        D.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_reductions_over_two_gloo_processes(tmp_path):
    # fork: the children need no fresh import of torch and rpnet (seconds each on 2 cores)
    torch.multiprocessing.start_processes(_collectives_worker, args=(str(tmp_path / "init"), str(tmp_path)),
                                          nprocs=2, start_method="fork")


# --------------------------------------------------------------------------- torchrun


def torchrun_command(nproc: int, *args: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of ``torchrun --standalone --nproc-per-node N -m rpnet ARGS``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "rpnet", *args]
    return cmd, env


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd, env = torchrun_command(nproc, *args)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


EXACT = ("train_cam.max_steps=3", "model.freeze_bn=true", "model.beta=1.0", "engine.trace_ranks=true")


@pytest.mark.slow
def test_train_cam_on_two_ranks_matches_one_process_with_the_same_global_batch(tiny_cfg, tmp_path):
    """Two gloo ranks of 2 images (one pair each) against one process of 4, for 3 steps.

    What makes the two runs the same computation: the prototype module compares images within a
    pair only and each rank holds whole pairs; batch norm is frozen (running statistics), as with
    ImageNet weights, since plain BN would normalise each rank's 2 images by their own statistics
    (SyncBatchNorm, ``engine.sync_bn``, is CUDA-only in torch); beta = 1 keeps every mask position,
    since the Bernoulli draws of eq. 6 come from each rank's own stream. The loss is a mean over
    images and DDP averages the two ranks' gradients, so the step is the same. Tolerance: float32
    sums in another order (two half-batch means averaged against one batch mean) differ by ~1e-7
    relative per step; 3 SGD steps stay within atol 1e-6, rtol 1e-5 (measured: 2e-8).
    """
    one = tiny_cfg(*EXACT, f"work_dir={tmp_path / 'one'}")
    two = tiny_cfg(*EXACT, f"work_dir={tmp_path / 'two'}")
    single = load_file(str(train_cam.run(one)))
    save_config(two, tmp_path / "two.yaml")
    torchrun(2, "train-cam", str(tmp_path / "two.yaml"))
    out = tmp_path / "two" / "train_cam"
    ranks = [read_jsonl(out / "trace" / f"rank{r}.jsonl") for r in range(2)]
    reference = read_jsonl(tmp_path / "one" / "train_cam" / "trace" / "rank0.jsonl")
    k = one.model.group_size
    assert [len(r) for r in ranks] == [3, 3] and len(reference) == 3
    for step, (a, b, ref) in enumerate(zip(*ranks, reference), start=1):
        assert a["step"] == b["step"] == step
        assert len(a["ids"]) == len(b["ids"]) == 2  # one whole pair per rank
        assert a["ids"] + b["ids"] == ref["ids"]  # together the single process's batch of that step
        assert a["weights"] == b["weights"]  # bit-identical after every optimiser step
    assert len({r["weights"] for r in ranks[0]}) == 3  # ... and the weights did change each step
    anchors = [[i for r in rank for i in r["ids"][::k]] for rank in ranks]
    assert not set(anchors[0]) & set(anchors[1])  # each image is one rank's anchor at most per epoch
    assert all(len(set(a)) == len(a) for a in anchors)
    # Rank 0 alone writes the log, with the loss averaged over ranks: the single process's loss.
    log_two, log_one = read_jsonl(out / "log.jsonl"), read_jsonl(tmp_path / "one" / "train_cam" / "log.jsonl")
    assert [r["step"] for r in log_two] == [1, 2, 3] and {r["world_size"] for r in log_two} == {2}
    for a, b in zip(log_two, log_one):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    double = load_file(str(out / "model.safetensors"))
    assert double.keys() == single.keys()
    for name in single:
        torch.testing.assert_close(double[name], single[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.slow
def test_make_cam_on_two_ranks_writes_the_files_of_one(tiny_cfg, tmp_path):
    one = tiny_cfg("train_cam.max_steps=1", f"work_dir={tmp_path / 'one'}")
    two = tiny_cfg("train_cam.max_steps=1", f"work_dir={tmp_path / 'two'}")
    weights = train_cam.run(one)
    (tmp_path / "two" / "train_cam").mkdir(parents=True)
    shutil.copy(weights, tmp_path / "two" / "train_cam" / weights.name)
    single = make_cam.run(one)
    save_config(two, tmp_path / "two.yaml")
    torchrun(2, "make-cam", str(tmp_path / "two.yaml"))
    double = WorkDir(two.work_dir).cams
    names = sorted(p.name for p in single.iterdir())
    assert len(names) == 8 and sorted(p.name for p in double.iterdir()) == names  # no temp files either
    for name in names:
        a, b = load_npz(single / name), load_npz(double / name)
        assert a.keys() == b.keys() and np.array_equal(a["keys"], b["keys"])
        # float16 in [0, 1] holds ~3 decimal digits: 1e-3 allows one rounding step from batching
        # 4 images per rank instead of 8 (other convolution kernels, same maths).
        for key in ("cam", "high_res"):
            assert a[key].dtype == b[key].dtype == np.float16
            np.testing.assert_allclose(a[key].astype(np.float32), b[key].astype(np.float32), atol=1e-3)


@pytest.mark.slow
def test_two_ranks_killed_mid_run_resume_to_the_uninterrupted_weights(tiny_cfg, tmp_path):
    """A 2-rank train-cam killed once its first epoch's checkpoint exists, then run again with
    --resume, ends with the weights of the same run left alone (every rank reloads last.pt)."""
    exact = [o for o in EXACT if not o.startswith("train_cam.max_steps")]
    straight = tiny_cfg(*exact, "train_cam.epochs=3", f"work_dir={tmp_path / 'straight'}")
    save_config(straight, tmp_path / "straight.yaml")
    torchrun(2, "train-cam", str(tmp_path / "straight.yaml"))
    killed = tiny_cfg(*exact, "train_cam.epochs=3", f"work_dir={tmp_path / 'killed'}")
    save_config(killed, tmp_path / "killed.yaml")
    out = tmp_path / "killed" / "train_cam"
    cmd, env = torchrun_command(2, "train-cam", str(tmp_path / "killed.yaml"))
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + TORCHRUN_TIMEOUT_S
    while not (out / "last.pt").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the launcher and both ranks, mid-run
    job.wait()
    assert not (out / "model.safetensors").exists(), "the run ended before it could be killed"
    done = torchrun(2, "train-cam", str(tmp_path / "killed.yaml"), "--resume")
    assert "resuming from" in done.stderr
    resumed = load_file(str(out / "model.safetensors"))
    expected = load_file(str(tmp_path / "straight" / "train_cam" / "model.safetensors"))
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)
    ranks = [read_jsonl(out / "trace" / f"rank{r}.jsonl") for r in range(2)]
    last = ranks[0][-1]["step"]
    assert last == ranks[1][-1]["step"] == len(read_jsonl(tmp_path / "straight" / "train_cam" / "trace" / "rank0.jsonl"))
    assert ranks[0][-1]["weights"] == ranks[1][-1]["weights"]  # the ranks agree at the end


def test_epoch_batches_are_full_seeded_shuffles():
    a = epoch_batches(10, 4, seed=0, epoch=0)
    assert [len(b) for b in a] == [4, 4]  # the last 2 images are dropped
    assert len(set(sum(a, []))) == 8 and set(sum(a, [])) <= set(range(10))
    assert a == epoch_batches(10, 4, seed=0, epoch=0)
    assert a != epoch_batches(10, 4, seed=0, epoch=1)


def test_ranks_take_disjoint_slices_of_each_global_batch():
    whole = epoch_batches(12, 4, seed=1, epoch=2)
    ranks = [epoch_batches(12, 4, seed=1, epoch=2, num_replicas=2, rank=r) for r in range(2)]
    assert [len(b) for r in ranks for b in r] == [2] * 6
    assert [a + b for a, b in zip(*ranks)] == whole  # rank 0's half, then rank 1's, of each step's batch
    with pytest.raises(ConfigError, match="train_irn.batch_size 4 must be a multiple of 8"):
        epoch_batches(12, 4, seed=1, epoch=2, num_replicas=8, rank=0, key="train_irn.batch_size")
