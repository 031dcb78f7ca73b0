"""``rpnet status WORK_DIR``: each stage's state, when it finished, how long it took, its figures
(the metrics it added, and the thresholds it calibrated: ``bg_threshold 0.185 (auto)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..calibration import CALIBRATION_FILE, calibration_entries, calibration_summary
from ..workdir import lock_held
from ..config import Config, load_config
from ..errors import DataError, RpnetError
from ..io import read_json
from ..layout import RUN_CONFIG, WorkDir
from .graph import scored_split, scoring_stages
from .runner import split_has_masks
from .state import STARTED_RECORD, StageStatus, stage_statuses

COLUMNS = ("stage", "state", "finished", "seconds", "figures")
FAR_BELOW = 0.5  # segmentation scoring under half its pseudo labels' mIoU learned little from them
DROPPED = 5.0  # points the validation curve lost from its peak to the last epoch worth a word


def work_dir_config(work_dir: str | Path) -> Config:
    """The config ``rpnet run`` saved in ``work_dir``, pointed at ``work_dir`` (the folder may have moved)."""
    path = Path(work_dir) / RUN_CONFIG
    if not path.is_file():
        raise DataError(f"{path} not found: {work_dir} is not a work dir made by `rpnet run`")
    return load_config(path, [f"work_dir={Path(work_dir)}"])


def figures(metrics: dict[str, Any]) -> str:
    """The scalar metrics a stage added, e.g. ``cam_miou 48.30, cam_threshold 0.25, cam_images 190`` (per-class
    tables left out); an estimate with its interval as ``cam_miou_estimate 41.20 [35.10, 47.90]``."""
    shown = []
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or key.endswith(("_estimate_low",
                                                                                         "_estimate_high")):
            continue
        text = f"{key} {value}" if isinstance(value, int) else f"{key} {value:.2f}"
        low, high = metrics.get(f"{key}_low"), metrics.get(f"{key}_high")
        if key.endswith("_estimate") and isinstance(low, (int, float)) and isinstance(high, (int, float)):
            text += f" [{low:.2f}, {high:.2f}]"
        shown.append(text)
    return ", ".join(shown)


def status_rows(statuses: dict[str, StageStatus], unscored: frozenset[str] = frozenset(),
                running: bool = False) -> list[tuple[str, ...]]:
    """One row of :data:`COLUMNS` per stage; a stale stage shows what its old outputs reported.

    ``unscored``: eval stages whose split has no masks: ``rpnet run`` skips them, and a missing one
    shows as "no masks" rather than as work left to do. ``running``: another process holds the work
    dir's lock, so the stage it has started is "running", not "partial"."""
    rows = []
    for status in statuses.values():
        record = status.record or {}
        seconds = record.get("seconds")
        calibrated = {key for key, _, _ in calibration_entries(status.folder / CALIBRATION_FILE)}
        metrics = {k: v for k, v in record.get("metrics", {}).items() if k not in calibrated}  # shown once, below
        shown = [figures(metrics), calibration_summary(status.folder / CALIBRATION_FILE)]
        state = "no masks" if status.state == "missing" and status.name in unscored else status.state
        if state == "partial" and running and (status.folder / STARTED_RECORD).is_file():
            state = "running"
        rows.append((status.name, state, str(record.get("finished", "")),
                     "" if seconds is None else f"{seconds:.1f}", ", ".join(s for s in shown if s)))
    return rows


def result_warnings(metrics: dict[str, Any]) -> list[str]:
    """What a run's figures (metrics.json) say is poor or easy to misread, one sentence each: segmentation
    far below its pseudo labels (under :data:`FAR_BELOW` times their mIoU, or their estimate), classes of
    the evaluation masks it never predicts, a validation curve that fell :data:`DROPPED` points from its peak
    while the last epoch's weights were kept, and a score on the split the kept epoch was chosen on."""
    found = []
    seg = metrics.get("seg_miou")
    pseudo = metrics.get("pseudo_miou", metrics.get("pseudo_miou_estimate"))
    if isinstance(seg, (int, float)) and isinstance(pseudo, (int, float)) and seg < FAR_BELOW * pseudo:
        found.append(f"segmentation scores {seg:.1f} mIoU, under half of its pseudo labels' {pseudo:.1f}: it learned "
                     "little from them (see train-seg's validation curve; more images or steps, or ImageNet "
                     "weights, model.pretrained, usually help)")
    never = metrics.get("seg_never_predicted") or []
    if never:
        found.append(f"the segmentation model never predicts {', '.join(never)} on the evaluation images, whose "
                     "masks hold them")
    peak, last = metrics.get("seg_val_peak"), metrics.get("seg_val_last")
    kept, epochs, peak_epoch = (metrics.get(k) for k in ("seg_model_epoch", "seg_epochs", "seg_val_peak_epoch"))
    if isinstance(peak, (int, float)) and isinstance(last, (int, float)) and kept == epochs:
        if last < peak - DROPPED:
            found.append(f"validation mIoU peaked at {peak:.1f} (epoch {peak_epoch}) and ended at {last:.1f}; "
                         "model.safetensors is the last epoch's: train_seg.keep=best keeps the peak's "
                         "(best.safetensors holds it now)")
    elif isinstance(kept, int) and isinstance(epochs, int) and kept != epochs and "seg_miou" in metrics:
        found.append(f"model.safetensors is epoch {kept}'s of {epochs}, chosen as the best on the evaluation masks: "
                     "seg_miou, scored on the same images, is optimistic")
    return found


def format_status(work_dir: str | Path) -> str:
    """The status table of ``work_dir`` as text, one line per stage."""
    cfg = work_dir_config(work_dir)
    try:
        unscored = frozenset(name for name in scoring_stages() if not split_has_masks(cfg, scored_split(cfg, name)))
    except RpnetError:  # the dataset has moved or gone: the states stand as they are
        unscored = frozenset()
    rows = [COLUMNS, *status_rows(stage_statuses(cfg), unscored, running=lock_held(Path(work_dir)))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows]
    metrics = WorkDir(work_dir).metrics
    warnings = result_warnings(read_json(metrics)) if metrics.is_file() else []
    return "\n".join(lines + [f"warning: {text}" for text in warnings])
