"""Many processes, one job: PyTorch's own ``torch.distributed``, as launched by ``torchrun``.

``torchrun --nproc-per-node N [--nnodes M ...] -m rpnet <stage> CONFIG`` starts N processes per
machine and gives each ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the rendezvous address)
in its environment. This module is the one place that reads them. :func:`session` (entered by
the command line around every stage) joins the process group and leaves it at the end; outside
torchrun it does nothing and :func:`world` is a single rank, so every stage runs unchanged in
one process.

What the stages use:

- training: :func:`split_batch` (the configured batch is the *global* one, split over ranks),
  :func:`wrap_model` (DistributedDataParallel, optionally with synchronised batch norm),
  :func:`mean_across_ranks` for logged losses, :func:`weights_digest` for the rank trace;
- per-image stages: :func:`shard` (each rank takes every R-th image, so outputs named by image
  never collide), :func:`all_reduce_sum` for confusion matrices and other sums, and
  :func:`barrier` so that rank 0 writes metrics only once every rank has finished.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data.sampling import shard_indices
from ..errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Backend per device type: NCCL for GPUs; gloo for CPUs (NCCL has no CPU path).
BACKEND_FOR_DEVICE = {"cuda": "nccl", "cpu": "gloo"}
BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class World:
    """This process's place in the job: global ``rank`` of ``size``, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs, metrics and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer (torchrun sets it)") from None


def env_world(env: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in ``env`` (default ``os.environ``); one rank when it is unset."""
    env = os.environ if env is None else env
    size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ConfigError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}")
    return World(rank=rank, size=size, local_rank=local_rank)


def world() -> World:
    """The process group's world once :func:`session` joined it, else a single rank."""
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=env_world().local_rank)
    return World()


def choose_backend(backend: str, device_type: str) -> str:
    """``auto`` -> NCCL for CUDA, gloo for CPU; an explicit choice is checked and kept."""
    if backend not in BACKENDS:
        raise ConfigError(f"engine.backend {backend!r} is unknown; choose from {list(BACKENDS)}")
    if backend == "auto":
        return BACKEND_FOR_DEVICE[device_type]
    if backend == "nccl" and device_type != "cuda":
        raise ConfigError("engine.backend nccl needs CUDA devices; use gloo (or auto) on CPU")
    return backend


@contextmanager
def session(backend: str = "auto", device: str = "auto") -> Iterator[World]:
    """Join torchrun's process group for the duration of the block; a no-op outside torchrun.

    ``device`` is the config's ``device`` (``auto``, ``cpu``, ``cuda``); with CUDA each process
    takes GPU ``LOCAL_RANK``. A group that is already initialised (a caller's own) is used and
    left alone. Ranks other than 0 log warnings and errors only, so that a job's log reads as
    one process's.
    """
    env = env_world()
    if not env.distributed or dist.is_initialized():
        yield world()
        return
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    chosen = choose_backend(backend, "cuda" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(env.local_rank)
    if chosen == "nccl":
        dist.init_process_group(chosen, device_id=torch.device("cuda", env.local_rank))
    else:
        dist.init_process_group(chosen)
    root = logging.getLogger("rpnet")
    level = root.level
    if not env.is_main:
        root.setLevel(logging.WARNING)
    log.info("process group: %d ranks (%s backend)", env.size, chosen)
    try:
        yield world()
    finally:
        root.setLevel(level)
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if world().distributed:
        dist.barrier()


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """The element-wise sum over ranks of ``values`` (any shape), as the same type on every rank.

    A confusion matrix (N, N) int64 from each rank's images adds up to the whole set's.
    """
    if not world().distributed:
        return values
    as_numpy = isinstance(values, np.ndarray)
    tensor = torch.from_numpy(np.ascontiguousarray(values)) if as_numpy else values
    buffer = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    out = buffer.to(tensor.device)
    return out.numpy() if as_numpy else out


def mean_across_ranks(terms: Mapping[str, Tensor]) -> dict[str, float]:
    """Each named scalar averaged over ranks (every rank must call this at the same step)."""
    names = sorted(terms)
    stacked = torch.stack([terms[n].detach().float().reshape(()) for n in names])
    total = all_reduce_sum(stacked) / world().size
    return {n: float(v) for n, v in zip(names, total.cpu())}


def shard(items: Sequence[T], current: World | None = None) -> list[T]:
    """This rank's part of ``items``: positions rank, rank + R, rank + 2R, ...

    Disjoint across ranks, together every item once; strided rather than contiguous so that
    images that are slow in one part of a dataset (large sizes listed together) are spread
    over the ranks. Every rank must pass the same ``items`` in the same order.
    """
    current = current or world()
    return [items[i] for i in shard_indices(len(items), current.size, current.rank)]


def split_batch(global_batch: int, world_size: int, multiple: int = 1, key: str = "batch_size") -> int:
    """The per-rank batch of a configured global batch; an error when it does not divide evenly.

    ``multiple``: each rank's batch must hold whole groups of this many images (the
    classifier's K images sharing a class are compared with each other, so a group must not
    be split over two processes).
    """
    unit = world_size * multiple
    if global_batch < unit or global_batch % unit:
        raise ConfigError(f"{key} {global_batch} must be a multiple of {unit} "
                          f"({world_size} ranks x groups of {multiple}) to split it over the ranks")
    return global_batch // world_size


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every trainable ``nn.BatchNorm2d`` replaced by ``nn.SyncBatchNorm`` with its state.

    Unlike ``nn.SyncBatchNorm.convert_sync_batchnorm`` this leaves subclasses alone: a frozen
    batch norm (running statistics only) must stay frozen, not become a trainable one.
    """
    if type(module) is nn.BatchNorm2d:
        sync = nn.SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        sync.load_state_dict(module.state_dict())
        sync.to(module.running_mean.device if module.running_mean is not None else module.weight.device)
        for name, param in module.named_parameters(recurse=False):
            getattr(sync, name).requires_grad_(param.requires_grad)
        return sync.train(module.training)
    for name, child in module.named_children():
        replaced = convert_sync_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def wrap_model(model: nn.Module, device: torch.device, *, sync_bn: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """``model`` (already on ``device``) in DistributedDataParallel; the model itself in one process.

    DDP broadcasts rank 0's weights at construction and averages gradients over ranks in
    ``backward``, so every rank takes the same optimiser step. ``sync_bn``: batch-norm
    statistics over the global batch (CUDA only, as in torch); otherwise each rank
    normalises with its own images' statistics and rank 0's running statistics are
    broadcast before each forward. ``find_unused_parameters``: needed when some trainable
    parameters get no gradient in a step (the classifier's block1-2 behind IRN's detach).
    """
    current = world()
    if not current.distributed:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError("engine.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU path); "
                              "set engine.sync_bn=false on CPU")
        model = convert_sync_batchnorm(model)
    device_ids = [device.index if device.index is not None else current.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def weights_digest(model: nn.Module) -> str:
    """SHA-1 of every parameter's bytes, in order: equal digests mean bit-identical weights."""
    digest = hashlib.sha1()
    for name, param in getattr(model, "module", model).named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for ``rank``'s own random stream (masks, dropout): ``seed`` itself on rank 0.

    Rank 0 keeps the single-process stream; other ranks draw from (seed, rank), so that their
    random draws differ from rank 0's without colliding with another seed's rank 0.
    """
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint32)[0])


def epoch_batches(num_images: int, batch_size: int, seed: int, epoch: int,
                  num_replicas: int = 1, rank: int = 0, key: str = "batch_size") -> list[list[int]]:
    """A seeded shuffle of the images cut into full global batches (the last partial one dropped),
    and of each global batch the ``rank``-th of ``num_replicas`` equal slices.

    The ranks' slices of one step are disjoint and together are the single-process batch of that step.
    ``key``: the config key ``batch_size`` came from, for the error when it does not split over the ranks.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_images)
    per_rank = split_batch(batch_size, num_replicas, key=key)
    return [order[i + rank * per_rank:i + (rank + 1) * per_rank].tolist()
            for i in range(0, num_images - batch_size + 1, batch_size)]
