"""``rpnet run``: every stage in order in one work dir, each only when its inputs changed.

For each stage, from its state (:mod:`.state`): done -> skipped; partial -> continued
with ``run(cfg, resume=True)`` (per-image stages skip finished images, training stages
go on from ``last.pt``); stale or missing -> its folder and the metrics it added are
deleted and it runs afresh. A stage that reran gets a new run id, so the stages below
it become stale in turn. ``start`` forces a fresh run of that stage and all after it;
``until`` stops after that stage.

The run holds the work dir's lock and writes only into folders it marked as its own
(:mod:`rpnet.workdir`): a second ``rpnet run`` on the same work dir is refused, and a stale
folder that holds files rpnet did not write is an error, not deleted.

Under torchrun every rank runs the loop and every stage; rank 0 alone deletes folders and
writes records, and the ranks wait for each other around each stage, so that all of them
read the same states.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import Config, save_config
from ..data.build import build_dataset
from ..engine.distributed import barrier, world
from ..errors import ConfigError, OutputError
from ..io import read_json, write_json
from ..workdir import mark, remove_ours, writing
from .. import stages
from ..layout import METRICS, RUN_CONFIG, WorkDir
from .graph import check_stage, scored_split, stage_order
from .state import DONE_RECORD, STARTED_RECORD, StageStatus, stage_statuses

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class StageResult:
    """What the runner did with one stage: ``action`` is "skipped", "ran", "resumed" or
    "no masks" (an eval stage whose split has no ground truth: not run)."""

    name: str
    action: str
    seconds: float  # the stage's time, earlier stopped runs of it included; for a skipped stage, the recorded one
    metrics: dict[str, Any]


def stage_range(order: list[str], start: str | None, until: str | None) -> tuple[int, int]:
    """Indices into ``order`` of the first forced stage (len(order) when none) and the last stage to run."""
    for name in (start, until):
        if name is not None:
            check_stage(name, order)
    first = order.index(start) if start else len(order)
    last = order.index(until) if until else len(order) - 1
    if start and first > last:
        raise ConfigError(f"--from {start} comes after --until {until}")
    return first, last


def run_pipeline(cfg: Config, *, start: str | None = None, until: str | None = None) -> list[StageResult]:
    """Bring every stage up to ``until`` (default: the last) up to date in ``cfg.work_dir``.

    ``start``: rerun that stage and every later one even when they are done. Writes the
    resolved config to ``WORK_DIR/config.yaml`` and ``done.json`` into each stage's folder.
    Returns one :class:`StageResult` per stage considered, in order.

    A stage that finds a file an earlier stage wrote missing or unreadable (:class:`~rpnet.errors.OutputError`)
    does not stop the run: that file is deleted, the stage that wrote it is continued (it redoes what is
    missing) and every stage below it runs again; once per file (single process; under torchrun the error
    stands).
    """
    order = stage_order()
    first, last = stage_range(order, start, until)
    work = Path(cfg.work_dir)
    main = world().is_main
    redone: set[Path] = set()
    with writing(work, main=main):
        if main:
            save_config(cfg, work / RUN_CONFIG)
        statuses = stage_statuses(cfg, order)
        preflight(cfg, [n for i, n in enumerate(order[:last + 1]) if i >= first or statuses[n].state != "done"])
        while True:
            try:
                return run_stages(cfg, order, first, last)
            except OutputError as exc:
                owner = output_owner(work, Path(exc.path), order)
                if owner is None or world().distributed or Path(exc.path) in redone:
                    raise
                redone.add(Path(exc.path))
                log.warning("run: %s; redoing %s and the stages below it", exc, owner)
                reopen_stage(cfg, owner, Path(exc.path))
                first = len(order)  # what the first attempt forced has run; the rest follows from the states


def run_stages(cfg: Config, order: list[str], first: int, last: int) -> list[StageResult]:
    """One pass over the stages up to index ``last``, forcing those from index ``first`` (run_pipeline)."""
    work = Path(cfg.work_dir)
    main = world().is_main
    results = []
    for index, name in enumerate(order[:last + 1]):
        # Recomputed per stage: a stage that just reran changes the state of those below it.
        status = stage_statuses(cfg, order)[name]
        forced = index >= first
        scored = scored_split(cfg, name)
        if scored is not None and not split_has_masks(cfg, scored):
            if main:
                print(f"rpnet run: {name} skipped: split {scored!r} of {cfg.data.root} has no "
                      "masks to score against")
            results.append(StageResult(name, "no masks", 0.0, {}))
            continue
        if status.state == "done" and not forced:
            record = status.record or {}
            log.info("run: %s is up to date (fingerprint %s), skipped", name, status.fingerprint)
            results.append(StageResult(name, "skipped", float(record.get("seconds", 0.0)), record.get("metrics", {})))
            continue
        resume = status.state == "partial" and not forced
        barrier()  # every rank has read the state before rank 0 changes it
        if main and not resume:
            clear_stage(work, status)
        barrier()  # and no rank starts the stage on the old outputs
        results.append(run_stage(cfg, name, status, resume=resume, main=main))
        barrier()  # done.json is written before any rank reads the next state
    return results


def output_owner(work: Path, path: Path, order: list[str]) -> str | None:
    """The stage whose folder holds ``path`` (a file it wrote), or None (a user's file: a mask, an image)."""
    for name in order:
        folder = WorkDir(work).stage(name)
        if path.resolve().is_relative_to(folder.resolve()):
            return name
    return None


def reopen_stage(cfg: Config, name: str, path: Path) -> None:
    """Make stage ``name`` partial again, as if killed before it finished: ``path`` (its unreadable or
    missing output) deleted, its ``done.json`` turned back into the ``started.json`` of the same inputs,
    so that the next pass continues it (it redoes only what is missing) and reruns every stage below."""
    folder = WorkDir(cfg.work_dir).stage(name)
    path.unlink(missing_ok=True)
    done = folder / DONE_RECORD
    record = read_json(done) if done.is_file() else None
    if record is not None:
        write_json(folder / STARTED_RECORD, {key: record[key] for key in ("stage", "fingerprint", "upstream")
                                             if key in record} | {"started": now()})
        done.unlink()


def preflight(cfg: Config, names: list[str]) -> None:
    """Before any work: each stage in ``names`` that has a ``check(cfg)`` checks what it can of its
    settings against the data (a batch larger than the training set, ...): an error now, not hours in."""
    for name in names:
        check = getattr(stages.load(name), "check", None)
        if check is not None:
            check(cfg)


def split_has_masks(cfg: Config, split: str) -> bool:
    """Whether any image of ``split`` has a ground-truth mask (what an eval stage scores against)."""
    return build_dataset(cfg.data, split, masks=True).has_masks


def clear_stage(work: Path, status: StageStatus) -> None:
    """Delete a stage's folder and the metrics its last finished run added to metrics.json."""
    if status.folder.exists():
        log.info("run: %s is %s: deleting %s", status.name, status.state, status.folder)
        done = status.folder / DONE_RECORD
        # A file newer than done.json was put or edited there by someone else: kept, and an error.
        remove_ours(status.folder, finished=done.stat().st_mtime if done.is_file() else None)
    added = (status.record or {}).get("metrics", {})
    path = work / METRICS
    if added and path.exists():
        metrics = read_json(path)
        write_json(path, {k: v for k, v in metrics.items() if k not in added})


def run_stage(cfg: Config, name: str, status: StageStatus, *, resume: bool, main: bool = True) -> StageResult:
    """Run one stage between its two records; an exception leaves ``started.json`` for a later resume.

    ``status``: the stage's state read before the run (its fingerprint and upstream run ids).
    ``main``: whether this process writes the records (rank 0).
    """
    log.info("run: %s: %s (fingerprint %s)", name, "continuing" if resume else "running", status.fingerprint)
    inputs = {"stage": name, "fingerprint": status.fingerprint, "upstream": status.upstream_runs}
    started_path = status.folder / STARTED_RECORD
    if main:
        mark(status.folder)
        (status.folder / DONE_RECORD).unlink(missing_ok=True)  # a stage command rerunning a finished stage
    started = read_json(started_path) if resume and started_path.exists() else {}
    earlier = float(started.get("seconds", 0.0))  # what earlier, stopped runs of this stage took
    if main:
        write_json(started_path, {**inputs, "started": started.get("started", now()), "seconds": earlier})
    before = read_metrics(Path(cfg.work_dir))
    clock = time.perf_counter()
    try:
        stages.load(name).run(cfg, resume=resume)
    except BaseException:  # Ctrl-C or an error: the time spent counts when the stage is continued (kill -9 is lost)
        if main:
            write_json(started_path, {**inputs, "started": started.get("started", now()),
                                      "seconds": round(earlier + time.perf_counter() - clock, 2)})
        raise
    seconds = round(earlier + time.perf_counter() - clock, 2)
    after = read_metrics(Path(cfg.work_dir))
    added = {k: v for k, v in after.items() if k not in before or before[k] != v}
    if main:
        write_json(status.folder / DONE_RECORD, {
            **inputs, "run_id": uuid.uuid4().hex, "finished": now(), "seconds": seconds, "resumed": resume,
            "metrics": added,
        })
        started_path.unlink(missing_ok=True)
    log.info("run: %s done in %.1f s%s", name, seconds, f" (with {earlier:.1f} s of earlier runs)" if earlier else "")
    return StageResult(name, "resumed" if resume else "ran", seconds, added)


def read_metrics(work: Path) -> dict[str, Any]:
    path = work / METRICS
    return read_json(path) if path.exists() else {}


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")
