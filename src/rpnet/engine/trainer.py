"""One training loop for every training stage (classifier, IRN, segmentation).

The loop owns what all three share: the poly learning rate, mixed precision on CUDA,
a checkpoint every epoch and on Ctrl-C, ``resume``, a progress bar with the loss terms,
learning rate, images/s and ETA, and a JSONL log. What differs per stage is the
``step_fn``, which takes a batch and returns its named loss terms (``"loss"`` is the one
minimised), and the batches themselves.

Under torchrun (:mod:`rpnet.engine.distributed`) the stage passes a DistributedDataParallel
model and batches holding this rank's share of each global batch; the loop then logs the
losses averaged over ranks and the whole job's images/s, lets rank 0 alone write checkpoints,
log and progress, resumes every rank from the same checkpoint, and returns once the final
weights are on disk for every rank to read.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from ..errors import RpnetError
from ..io import append_jsonl, atomic_write_text, read_jsonl
from ..layout import CHECKPOINT, LOG, TRACE, WEIGHTS
from .distributed import all_reduce_sum, barrier, mean_across_ranks, rank_seed, weights_digest, world
from .progress import progress_bar
from .checkpoint import Progress, load_checkpoint, save_checkpoint, save_model_weights
from .schedule import set_poly_lr

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    steps_per_epoch: int
    poly_power: float = 0.9
    amp: bool = True
    log_every: int = 10
    max_steps: int | None = None  # stop after this many steps in all (smoke tests, benchmarks)
    show_progress: bool = True
    global_batch: int | None = None  # images per step over all ranks, for the log (None: not stated)
    trace: bool = False  # each rank appends its batch's image ids and a weights digest per step
    tensorboard: bool = False  # also write every log record to out_dir/tensorboard/ (needs `tensorboard`)

    @property
    def total_steps(self) -> int:
        full = self.epochs * self.steps_per_epoch
        return min(full, self.max_steps) if self.max_steps else full


def autocast_context(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA where supported (float16 otherwise); nothing on CPU."""
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int, int], Iterable[Mapping[str, object]]],
    step_fn: Callable[[Mapping[str, object]], Mapping[str, Tensor]],
    settings: LoopSettings,
    out_dir: Path,
    *,
    device: torch.device,
    resume: bool = False,
    is_main: bool | None = None,
    batch_images: Callable[[Mapping[str, object]], int] = lambda b: len(b["id"]),  # type: ignore[arg-type]
    on_epoch_end: Callable[[Progress], Mapping[str, float]] | None = None,
) -> Path:
    """Train ``model`` and write ``out_dir/model.safetensors``; return its path.

    ``batches(epoch, skip)`` yields the epoch's batches after the first ``skip`` (so a resumed
    epoch continues where it stopped); under torchrun, this rank's part of each step's batch.
    ``is_main`` (default: rank 0 of :func:`~rpnet.engine.distributed.world`) is the one process
    that writes checkpoints, log and progress. The optimizer's groups' current lrs are taken as
    the poly schedule's bases; they are not scaled with the number of ranks.
    ``on_epoch_end(progress)``: called on every rank after each finished epoch, before its checkpoint
    (e.g. validation); the figures it returns are logged with the epoch and step.
    """
    out_dir = Path(out_dir)
    current = world()
    if is_main is None:
        is_main = current.is_main
    ckpt = out_dir / CHECKPOINT
    base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["initial_lr"] = base
    progress = Progress()
    if resume and _checkpoint_on_every_rank(ckpt):
        progress = load_checkpoint(ckpt, model, optimizer)
        if current.rank:
            # The checkpoint holds rank 0's random stream; the other ranks take a stream of their own
            # keyed by the step, so that a resumed job's ranks still draw different masks.
            torch.manual_seed(rank_seed(progress.step, current.rank))
        log.info("resuming from %s at epoch %d, batch %d (step %d)", ckpt, progress.epoch, progress.batch, progress.step)
    elif resume:
        log.info("no checkpoint at %s: starting from scratch", ckpt)
    # The log holds the steps of this run's weights only: a resumed run drops what a killed run logged
    # after its checkpoint (it logs those steps again), a fresh one starts an empty log.
    if is_main:
        cut_log(out_dir / LOG, progress.step)
    writer = LogWriter(out_dir, settings.tensorboard) if is_main else None
    if settings.trace:
        cut_log(out_dir / TRACE / f"rank{current.rank}.jsonl", progress.step)
    lrs = ", ".join(f"{lr:g}" for lr in base_lrs)
    if settings.global_batch is not None:
        log.info("%d rank(s) x %d images = effective batch %d per step; base lr %s as configured "
                 "(not scaled with the number of ranks)", current.size, settings.global_batch // current.size,
                 settings.global_batch, lrs)
    else:
        log.info("%d rank(s); base lr %s as configured (not scaled with the number of ranks)", current.size, lrs)
    total = settings.total_steps
    fp16_scaler = None
    if settings.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        fp16_scaler = torch.amp.GradScaler("cuda")
    bar = progress_bar(total, out_dir.name, "step", initial=progress.step, enabled=is_main and settings.show_progress)
    model.train()
    try:
        while progress.step < total and progress.epoch < settings.epochs:
            window_start, window_images = time.perf_counter(), 0
            for batch in batches(progress.epoch, progress.batch):
                if progress.step >= total:
                    break
                set_poly_lr(optimizer, base_lrs, progress.step, total, settings.poly_power)
                with autocast_context(device, settings.amp):
                    terms = step_fn(batch)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise RpnetError(f"{out_dir.name}: the loss became {loss.item()} at step {progress.step}: training "
                                     f"diverged; lower the learning rate (--set {out_dir.name}.lr=...) and run again "
                                     "(the last checkpoint is kept)")
                optimizer.zero_grad(set_to_none=True)
                if fp16_scaler is not None:
                    fp16_scaler.scale(loss).backward()
                    fp16_scaler.step(optimizer)
                    fp16_scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                progress.step += 1
                progress.batch += 1
                # Every rank runs the same number of equal batches, so the job's images are R times a rank's.
                window_images += batch_images(batch) * current.size
                if settings.trace:
                    append_jsonl(out_dir / TRACE / f"rank{current.rank}.jsonl",
                                 {"step": progress.step, "rank": current.rank, "ids": list(batch.get("id", [])),
                                  "weights": weights_digest(model)})
                if progress.step % settings.log_every == 0 or progress.step == total:
                    # Every rank takes part in the average; only the main one writes it.
                    if current.distributed:
                        values = mean_across_ranks(terms)
                    else:
                        values = {k: float(v.detach()) for k, v in terms.items()}
                    elapsed = time.perf_counter() - window_start
                    record = {"epoch": progress.epoch, "step": progress.step, "lr": optimizer.param_groups[0]["lr"],
                              "images_per_s": round(window_images / max(elapsed, 1e-9), 2),
                              **{k: round(v, 6) for k, v in values.items()}}
                    if current.distributed:
                        record["world_size"] = current.size
                    if writer is not None:
                        writer.write(record)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("epoch", "step")})
                    window_start, window_images = time.perf_counter(), 0
                bar.update(1)
            else:  # the epoch's batches ran out; a stop at max_steps keeps its place in the epoch instead
                # The epoch counts as done only once its end-of-epoch work (validation) has finished: a Ctrl-C
                # during it saves the epoch as not yet ended, and a resumed run does that work again.
                ended = Progress(epoch=progress.epoch + 1, batch=0, step=progress.step)
                figures = on_epoch_end(ended) if on_epoch_end is not None else {}
                if figures and writer is not None:
                    writer.write({"epoch": progress.epoch, "step": progress.step, **figures})
                progress.epoch, progress.batch = ended.epoch, ended.batch
                model.train()  # the callback may have put the model in eval mode
            if is_main:
                save_checkpoint(ckpt, model, optimizer, progress)
    except KeyboardInterrupt:
        if is_main:
            save_checkpoint(ckpt, model, optimizer, progress)
            log.warning("interrupted: checkpoint saved to %s; continue with --resume", ckpt)
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    weights = out_dir / WEIGHTS
    if is_main:
        save_model_weights(weights, model)
    barrier()  # the weights exist before any rank goes on to read them
    return weights


class LogWriter:
    """The training log: ``log.jsonl``, and with ``tensorboard`` the same scalars for TensorBoard
    (``out_dir/tensorboard/``, one tag per field, at the record's step)."""

    def __init__(self, out_dir: Path, tensorboard: bool = False) -> None:
        self.path = out_dir / LOG
        self.board = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RpnetError("engine.tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.board = SummaryWriter(str(out_dir / "tensorboard"))

    def write(self, record: Mapping[str, float]) -> None:
        append_jsonl(self.path, record)
        if self.board is not None:
            for key, value in record.items():
                if key not in ("epoch", "step"):
                    self.board.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def cut_log(path: Path, step: int) -> None:
    """Keep the records of a JSONL training log up to ``step`` (all of them up to and including it)."""
    records = read_jsonl(path)
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) < len(records):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _checkpoint_on_every_rank(ckpt: Path) -> bool:
    """Whether ``ckpt`` exists, agreed by all ranks; an error when only some of them see it."""
    here = int(ckpt.exists())
    seen = int(all_reduce_sum(torch.tensor([here], dtype=torch.int64))[0])
    size = world().size
    if 0 < seen < size:
        raise RpnetError(f"{ckpt} is visible to {seen} of {size} ranks: put work_dir on a file system that every "
                         "machine of the job shares (rank 0 alone writes checkpoints)")
    return seen == size

