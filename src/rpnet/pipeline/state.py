"""Where each stage of a work dir stands: done, stale, partial or missing.

The runner leaves two records in a stage's folder: ``started.json`` before the stage
runs (its fingerprint and the run ids of its upstream stages) and ``done.json`` when it
has finished (the same, plus the time, the duration and the metrics it added). From
them and the current config:

- ``done``: ``done.json`` has the current fingerprint, was made from the upstream runs
  that are there now, and every upstream stage is done;
- ``partial``: no ``done.json``, but the folder was started with the current inputs (a
  stage killed half-way): it is continued with ``resume=True``;
- ``stale``: outputs made from other inputs (config, data, or an upstream stage that
  has run again since): they are deleted and the stage runs afresh;
- ``missing``: no folder.

A folder a stage command (``rpnet make-cam ...``) made by hand has no records; it counts
as partial when the ``config.yaml`` it holds gives the current fingerprint, so ``rpnet run``
continues it instead of throwing it away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..errors import ConfigError
from ..io import read_json
from .fingerprint import stage_fingerprints
from ..layout import RUN_CONFIG, WorkDir, stage_folder
from .graph import stage_order, stage_spec

DONE_RECORD = "done.json"
STARTED_RECORD = "started.json"
STATES = ("done", "partial", "stale", "missing")


@dataclass(frozen=True)
class StageStatus:
    """One stage in one work dir: its state, its folder, its current fingerprint and its ``done.json``."""

    name: str
    state: str
    folder: Path
    fingerprint: str
    upstream_runs: dict[str, str] | None  # upstream stage -> run id now; None while an upstream is not done
    record: dict[str, Any] | None  # done.json, when there is one (also for a stale stage)


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None when it is absent or unreadable (a torn file counts as no record)."""
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stage_statuses(cfg: Config, order: list[str] | None = None) -> dict[str, StageStatus]:
    """The state of every stage under ``cfg.work_dir``, in pipeline order."""
    order = stage_order() if order is None else order
    prints = stage_fingerprints(cfg, order)
    statuses: dict[str, StageStatus] = {}
    for name in order:
        folder = WorkDir(cfg.work_dir).stage(name)
        upstream = [statuses[u] for u in stage_spec(name, order).upstream]
        runs = None
        if all(u.state == "done" for u in upstream):
            runs = {u.name: u.record.get("run_id", "") for u in upstream}
        done = read_record(folder / DONE_RECORD)
        state = decide(folder, done, prints[name], runs, cfg)
        statuses[name] = StageStatus(name, state, folder, prints[name], runs, done)
    return statuses


def decide(folder: Path, done: dict | None, fingerprint: str, runs: dict[str, str] | None, cfg: Config) -> str:
    """One stage's state (see the module docstring) from its records and its current inputs."""
    current = {"fingerprint": fingerprint, "upstream": runs}
    if done is not None:
        fresh = runs is not None and {k: done.get(k) for k in current} == current
        return "done" if fresh else "stale"
    if not folder.is_dir():
        return "missing"
    if runs is None:
        return "stale"
    started = read_record(folder / STARTED_RECORD)
    if started is not None:
        return "partial" if {k: started.get(k) for k in current} == current else "stale"
    return "partial" if hand_made_fingerprint(folder, cfg) == fingerprint else "stale"


def hand_made_fingerprint(folder: Path, cfg: Config) -> str | None:
    """The fingerprint of the config a stage command saved in ``folder``, or None without a readable one."""
    path = folder / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        saved = load_config(path, [f"work_dir={cfg.work_dir}"])
    except ConfigError:
        return None
    name = next((n for n in stage_order() if stage_folder(n) == folder.name), None)
    return stage_fingerprints(saved).get(name) if name else None
