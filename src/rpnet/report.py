"""The HTML report: one self-contained page comparing the runs in one or more work dirs.

Reads what the stages left in each work dir (``metrics.json``, ``eval_cam/sweep.json``,
the training logs, the example pictures, eval-seg's predicted masks, ``train_cam/config.yaml``)
and writes a single HTML file with every picture and plot embedded as a base64 PNG, so the
file can be mailed, attached to a CI run or opened offline. A stage that has not run leaves its
section out. Every string read from a file is escaped before it reaches the page.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders with Agg and touches no pyplot state

from . import __version__
from .calibration import CALIBRATION_FILE, ESTIMATES, MASKS, calibration_entries, estimate_text
from .config import AUTO
from .gallery import ROW_STYLE, legend_html, read_gallery_run, sample_rows, thumbnail_png, write_gallery
from .io import atomic_write_text, read_json, read_jsonl
from .layout import LOG, WorkDir, load_cams
from .pipeline.status import result_warnings

DEFAULT_TITLE = "rpnet report"
MISSING = "—"
EXAMPLES_PER_RUN = 3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_DPI = 100
BAR_INCHES = 0.3  # width per bar slot in the per-class charts
MIN_PLOT_INCHES, MAX_PLOT_INCHES = 6.0, 16.0
ROTATE_LABELS_ABOVE = 8  # classes; more than this and their names slant to fit
TRAIN_PLOT_COLUMNS = 3
FEW_POINTS = 20  # a training curve with this many points or fewer is drawn with markers
RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

# (metrics.json key, row label, format); a row appears when any run has the value.
METRIC_ROWS = (
    ("cam_miou", "CAM mIoU (%)", "{:.2f}"),
    ("cam_threshold", "CAM background threshold", "{:.2f}"),
    ("cam_part_recall", "CAM recall of distinctive parts (%)", "{:.1f}"),
    ("cam_body_recall", "CAM recall of the rest of objects (%)", "{:.1f}"),
    ("cam_context_fp", "CAM on co-occurring background (%)", "{:.1f}"),
    ("cam_background_fp", "CAM on other background (%)", "{:.1f}"),
    ("pseudo_miou", "pseudo-label mIoU (%)", "{:.2f}"),
    ("seg_miou", "segmentation mIoU (%)", "{:.2f}"),
    ("seg_miou_crf", "segmentation mIoU with CRF (%)", "{:.2f}"),
    ("seg_val_peak", "segmentation val mIoU in training, peak (%)", "{:.2f}"),
    ("seg_val_last", "segmentation val mIoU in training, last epoch (%)", "{:.2f}"),
    ("seg_model_epoch", "epoch of model.safetensors", "{:.0f}"),
)
PER_CLASS = (("cam_per_class", "CAM"), ("pseudo_per_class", "pseudo labels"), ("seg_per_class", "segmentation"))
TRAIN_STAGES = ("train-cam", "train-irn", "train-seg")
LOG_FIELDS = frozenset({"epoch", "step", "lr", "images_per_s"})  # logged every step, but not loss terms
PICTURE_STAGES = ("eval-pseudo", "eval-cam")  # the first one with pictures wins: it has the most panels
GRID_COLUMNS = ("image", "CAM", "pseudo mask", "prediction", "ground truth")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; color: #222; }
h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; text-align: center; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
ul.warnings { color: #8a4b00; }
footer { margin-top: 2em; font-size: 0.9em; color: #555; }
""" + ROW_STYLE


@dataclass(frozen=True)
class Run:
    """One work dir in the report, under the name its column and legend entries carry."""

    name: str
    work_dir: Path
    metrics: Mapping[str, Any]


def write_report(work_dirs: Mapping[str, str | Path], out: str | Path, title: str = DEFAULT_TITLE) -> Path:
    """Write the report comparing ``work_dirs`` (run name -> work dir) to ``out``, atomically.

    E.g. ``{"baseline": OUT / "baseline", "rpnet": OUT / "rpnet"}`` for the demo, or
    ``{"run": WORK_DIR}`` for one experiment. Returns ``out``.
    """
    if not work_dirs:
        raise ValueError("write_report needs at least one work dir")
    runs = [load_run(name, Path(path)) for name, path in work_dirs.items()]
    out = Path(out)
    sections = (warnings_section(runs), metrics_section(runs), calibration_section(runs), gallery_section(runs, out),
                per_class_section(runs),
                threshold_section(runs), training_section(runs), examples_section(runs), predictions_section(runs))
    body = "\n".join(s for s in sections if s) or "<p>No stage has written results yet.</p>"
    return atomic_write_text(out, page(title, body + "\n" + footer(runs)))


def load_run(name: str, work_dir: Path) -> Run:
    path = WorkDir(work_dir).metrics
    return Run(name, work_dir, read_json(path) if path.exists() else {})


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n</body>\n</html>\n")


def section(id_: str, heading: str, parts: Sequence[str]) -> str:
    """A <section> of ``parts`` (already HTML), or "" when there are none."""
    if not parts:
        return ""
    return f'<section id="{id_}">\n<h2>{esc(heading)}</h2>\n' + "\n".join(parts) + "\n</section>"


def warnings_section(runs: list[Run]) -> str:
    """What each run's figures say is poor or easy to misread (:func:`rpnet.pipeline.status.result_warnings`)."""
    items = [f"<li>{esc(run.name)}: {esc(text)}</li>" for run in runs for text in result_warnings(run.metrics)]
    return section("warnings", "Warnings", ['<ul class="warnings">\n' + "\n".join(items) + "\n</ul>"]) if items else ""


def metrics_section(runs: list[Run]) -> str:
    rows = {}
    for key, label, fmt in METRIC_ROWS:
        values = [number(run.metrics.get(key)) for run in runs]
        if any(v is not None for v in values):
            rows[label] = [format_number(v, fmt) for v in values]
    for prefix, what in ESTIMATES.items():  # a calibration split's estimates, with their intervals
        texts = [estimate_text(run.metrics, prefix) for run in runs]
        if any(texts):
            rows[f"{what}: mIoU estimated from the calibration masks (%)"] = [t or MISSING for t in texts]
    if not rows:
        return ""
    return section("metrics", "Metrics", [table("metrics_table", "", [run.name for run in runs], rows)])


SOURCE_WORDS = {AUTO: "calibrated", MASKS: "chosen on masks", "config": "configured"}


def calibration_section(runs: list[Run]) -> str:
    """The thresholds the stages calibrated without ground truth (each stage's calibration.json):
    one row per stage and key, the value each run used and whether it was calibrated or configured."""
    rows: dict[str, list[str]] = {}
    for i, run in enumerate(runs):
        for path in sorted(run.work_dir.glob(f"*/{CALIBRATION_FILE}")):
            for key, value, source in calibration_entries(path):
                rows.setdefault(f"{path.parent.name.replace('_', '-')}: {key}", [""] * len(runs))[i] = (
                    f"{value:.3f} ({SOURCE_WORDS.get(source, source)})")
    if not rows:
        return ""
    note = ("<p>Thresholds chosen from the data without ground truth (<code>auto</code>), chosen on the masks of "
            "the calibration split (<code>data.calibration_split</code>), or given in the config; each stage writes "
            "them to its <code>calibration.json</code>.</p>")
    return section("calibration", "Calibrated thresholds", [note, table("calibration_table", "", [r.name for r in runs], rows)])


def per_class_section(runs: list[Run]) -> str:
    parts = []
    for key, label in PER_CLASS:
        tables = {run.name: run.metrics[key] for run in runs if isinstance(run.metrics.get(key), Mapping)}
        if tables:
            classes = list(dict.fromkeys(name for per_class in tables.values() for name in per_class))
            values = {run: [number(per_class.get(c)) for c in classes] for run, per_class in tables.items()}
            rows = {c: [format_number(v[i], "{:.2f}") for v in values.values()] for i, c in enumerate(classes)}
            parts.append(f"<h3>{esc(label)}</h3>\n{img(per_class_plot(classes, values), f'per-class IoU, {label}')}\n"
                         f"<details><summary>values</summary>\n{table(key, 'class', list(values), rows)}\n</details>")
    return section("per-class", "Per-class IoU (%)", parts)


def per_class_plot(classes: list[str], values: Mapping[str, list[float | None]]) -> bytes:
    """Grouped bars: one group per class, one bar (colour) per run; a missing IoU leaves a gap."""
    width_inches = BAR_INCHES * len(classes) * (len(values) + 1)
    fig = Figure(figsize=(min(MAX_PLOT_INCHES, max(MIN_PLOT_INCHES, width_inches)), 3.2))
    ax = fig.subplots()
    x = np.arange(len(classes))
    width = 0.8 / len(values)
    for i, (run, ious) in enumerate(values.items()):
        heights = [math.nan if v is None else v for v in ious]
        offsets = x + (i - (len(values) - 1) / 2) * width
        ax.bar(offsets, heights, width, label=plain(run), color=colour(i))
        for where, value in zip(offsets, ious):  # n/a (the class never occurs) is not 0 %: say so
            if value is None:
                ax.text(where, 1, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="#666")
    slant = len(classes) > ROTATE_LABELS_ABOVE
    ax.set_xticks(x, [plain(c) for c in classes], rotation=45 if slant else 0, ha="right" if slant else "center")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return png(fig)


def threshold_section(runs: list[Run]) -> str:
    sweeps = {}
    for run in runs:
        path = WorkDir(run.work_dir).cam_sweep
        if path.exists():
            sweep = read_json(path)
            sweeps[run.name] = ([float(t) for t in sweep["thresholds"]], [float(m) for m in sweep["miou"]])
    if not sweeps:
        return ""
    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.subplots()
    notes = []
    for i, (run, (thresholds, miou)) in enumerate(sweeps.items()):
        best = int(np.argmax(miou))
        ax.plot(thresholds, miou, color=colour(i), label=plain(run))
        ax.plot([thresholds[best]], [miou[best]], "o", color=colour(i), markersize=8)
        ax.annotate(f"{miou[best]:.2f}", (thresholds[best], miou[best]), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=8, color=colour(i))
        notes.append(f"<li>{esc(run)}: best threshold {thresholds[best]:.2f}, mIoU {miou[best]:.2f}%</li>")
    ax.set_xlabel("background threshold")
    ax.set_ylabel("CAM mIoU (%)")
    ax.legend(fontsize=8)
    plot = img(png(fig), "CAM mIoU against the background threshold")
    return section("threshold", "Background threshold", [plot, "<ul>\n" + "\n".join(notes) + "\n</ul>"])


def training_section(runs: list[Run]) -> str:
    parts = []
    for stage in TRAIN_STAGES:
        logs = {run.name: read_jsonl(WorkDir(run.work_dir).stage(stage) / LOG) for run in runs}
        logs = {run: records for run, records in logs.items() if records}
        if logs:
            keys = (key for records in logs.values() for record in records for key in record)
            terms = list(dict.fromkeys(key for key in keys if key not in LOG_FIELDS))
            parts.append(f"<h3>{esc(stage)}</h3>\n{img(training_plot(logs, terms), f'{stage} loss terms')}\n"
                         f"<p>loss terms: {esc(', '.join(terms))}</p>")
    return section("training", "Training", parts)


def training_plot(logs: Mapping[str, list[dict[str, Any]]], terms: list[str]) -> bytes:
    """One small panel per loss term (their scales differ by orders of magnitude), one line per run."""
    cols = min(TRAIN_PLOT_COLUMNS, len(terms))
    rows = -(-len(terms) // cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax, term in zip(axes, terms):
        for i, (run, records) in enumerate(logs.items()):
            points = [(r["step"], v) for r in records if "step" in r and (v := number(r.get(term))) is not None]
            if points:  # few points (a short run, a coarse log): markers, or a single point would not show
                ax.plot(*zip(*points), color=colour(i), label=plain(run), linewidth=1.2,
                        marker="o" if len(points) <= FEW_POINTS else None, markersize=3)
        ax.set_title(plain(term), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(terms):]:  # what is left of the grid after the last term
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return png(fig)


def examples_section(runs: list[Run]) -> str:
    parts = []
    for run in runs:
        for pictures in (example_pictures(run.work_dir), spread_pictures(WorkDir(run.work_dir).pictures("eval-seg"))):
            if pictures:
                figures = "".join(f"<figure>{img(p.read_bytes(), p.stem)}<figcaption>{esc(p.stem)}</figcaption>"
                                  "</figure>\n" for p in pictures)
                stage = pictures[0].parent.parent.name
                parts.append(f'<h3>{esc(run.name)} ({esc(stage)})</h3>\n<div class="grid">\n{figures}</div>')
    return section("examples", "Examples", parts)


def example_pictures(work_dir: Path) -> list[Path]:
    """Up to EXAMPLES_PER_RUN PNG panels, spread over the sorted pictures of the richest label stage."""
    for stage in PICTURE_STAGES:
        paths = spread_pictures(WorkDir(work_dir).pictures(stage))
        if paths:
            return paths
    return []


def spread_pictures(folder: Path) -> list[Path]:
    """Up to EXAMPLES_PER_RUN of the PNG files in ``folder``: first, last and evenly between."""
    paths = sorted(p for p in folder.glob("*.png") if is_png(p))
    if not paths:
        return []
    picks = np.linspace(0, len(paths) - 1, min(EXAMPLES_PER_RUN, len(paths))).round().astype(int)
    return [paths[i] for i in dict.fromkeys(picks)]


def predictions_section(runs: list[Run]) -> str:
    """Per run, a grid with one row per example image of eval-seg: image, CAM, pseudo mask, prediction,
    ground truth; a cell is a dash where that stage did not cover the image (CAMs and pseudo masks
    exist for the training split, predictions for the evaluation split)."""
    parts = []
    for run in runs:
        ids = [p.stem for p in spread_pictures(WorkDir(run.work_dir).seg_masks)]
        if not ids:
            continue
        sources = image_sources(run.work_dir, ids)
        threshold = number(run.metrics.get("cam_threshold"))
        rows = {image_id: [cell_html(panel, f"{image_id} {name}") for name, panel in
                           zip(GRID_COLUMNS, grid_panels(run.work_dir, image_id, sources.get(image_id), threshold))]
                for image_id in ids}
        parts.append(f"<h3>{esc(run.name)}</h3>\n" + html_grid(f"predictions_{len(parts)}", rows))
    return section("predictions", "Predictions", parts)


def image_sources(work_dir: Path, ids: list[str]) -> dict[str, tuple[Path, Any]]:
    """image id -> (image path, ground-truth reader) from the dataset the run's config names; {} when it
    cannot be read (a moved dataset, or a work dir without a config): the grid then shows dashes."""
    from .config import load_config
    from .data.build import build_dataset
    from .data.dataset import read_mask_file
    from .errors import RpnetError

    work = WorkDir(work_dir)
    config = next((p for p in (work.config, work.stage_config("eval-seg")) if p.is_file()), None)
    if config is None:
        return {}
    try:
        cfg = load_config(config)
        dataset = build_dataset(cfg.data, cfg.eval_seg.split or cfg.data.eval_split, masks=True)
    except (RpnetError, OSError, ValueError):
        return {}
    wanted = set(ids)
    reader = dataset.mask_loader or read_mask_file
    return {r.id: (r.image, lambda record=r: reader(record)) for r in dataset.records if r.id in wanted}


def grid_panels(work_dir: Path, image_id: str, source: tuple[Path, Any] | None,
                threshold: float | None) -> list[np.ndarray | None]:
    """The five pictures of one grid row as (H, W, 3) uint8 arrays, None where there is none."""
    from .data.images import read_image
    from .io import load_mask
    from .ops.cam import cams_to_labels
    from .viz import colorize

    def mask_at(path: Path) -> np.ndarray | None:
        return colorize(load_mask(path)) if path.is_file() else None

    image = gt = cam = None
    if source is not None:
        image = read_image(source[0])
        mask = source[1]()
        gt = None if mask is None else colorize(mask)
    work = WorkDir(work_dir)
    if work.cam(image_id).is_file() and threshold is not None:  # no threshold: eval-cam has not run
        cams = load_cams(work.cam(image_id))
        cam = colorize(cams_to_labels(cams.high_res.astype(np.float32), cams.keys, threshold))
    pseudo = mask_at(work.pseudo_masks / f"{image_id}.png")
    return [image, cam, pseudo, mask_at(work.seg_masks / f"{image_id}.png"), gt]


def cell_html(panel: np.ndarray | None, alt: str) -> str:
    return MISSING if panel is None else img(thumbnail_png(panel), alt)


def gallery_section(runs: list[Run], out: Path) -> str:
    """Per run: the class colours, a few tagged training images with everything the stages made of them
    (rpnet.gallery; no ground truth needed), and a link to the run's whole gallery."""
    parts = []
    for run in runs:
        shown = read_gallery_run(run.work_dir)
        if shown is None or not shown.records:
            continue
        index = write_gallery(run.work_dir, shown)
        rows = sample_rows(run.work_dir, shown)
        link = Path(os.path.relpath(index, out.parent)).as_posix()
        figures = "\n".join(
            f'<div class="row"><h4>{esc(image_id)}</h4>' + "".join(
                f"<figure>{cell_html(p.pixels, f'{image_id} {p.caption}')}<figcaption>{esc(p.caption)}</figcaption>"
                "</figure>" for p in panels) + "</div>" for image_id, panels in rows)
        parts.append(f'<h3>{esc(run.name)}</h3>\n<p>Every tagged training image, paged, with a search box: '
                     f'<a href="{esc(link)}">{esc(link)}</a></p>\n{legend_html(shown.class_names)}\n'
                     f"{figures}")
    return section("gallery", "Gallery", parts)


def html_grid(id_: str, rows: Mapping[str, Sequence[str]]) -> str:
    """A table of already-HTML cells (pictures), one row per image id, a column per GRID_COLUMNS entry."""
    head = "<tr><th>image id</th>" + "".join(f"<th>{esc(c)}</th>" for c in GRID_COLUMNS) + "</tr>\n"
    body = "".join(f"<tr><th>{esc(image_id)}</th>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>\n"
                   for image_id, cells in rows.items())
    return f'<table id="{id_}">\n{head}{body}</table>'


def is_png(path: Path) -> bool:
    """Whether the file starts with the PNG signature (a data:image/png URI of anything else shows broken)."""
    with open(path, "rb") as fh:
        return fh.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE


def footer(runs: list[Run]) -> str:
    configs = []
    for run in runs:
        path = WorkDir(run.work_dir).stage_config("train-cam")
        if path.exists():
            configs.append(f"<details><summary>config of {esc(run.name)} ({esc(path)})</summary>\n"
                           f"<pre>{esc(path.read_text())}</pre>\n</details>")
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    generated = f"<p>Generated {esc(stamp)} by rpnet {esc(__version__)}.</p>"
    return "<footer>\n" + "\n".join([*configs, generated]) + "\n</footer>"


def table(id_: str, corner: str, columns: Sequence[str], rows: Mapping[str, Sequence[str]]) -> str:
    """A table with a header row of ``columns`` and one row per ``rows`` entry (label -> formatted cells)."""
    head = f"<tr><th>{esc(corner)}</th>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>\n"
    body = "".join(f"<tr><th>{esc(label)}</th>" + "".join(f'<td class="num">{esc(cell)}</td>' for cell in cells)
                   + "</tr>\n" for label, cells in rows.items())
    return f'<table id="{id_}">\n{head}{body}</table>'


def number(value: Any) -> float | None:
    """A finite number from a JSON value, else None (missing, null, NaN, or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def format_number(value: float | None, fmt: str) -> str:
    return MISSING if value is None else fmt.format(value)


def img(png_bytes: bytes, alt: str) -> str:
    data = base64.b64encode(png_bytes).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    return buf.getvalue()


def colour(i: int) -> str:
    return RUN_COLOURS[i % len(RUN_COLOURS)]


def plain(text: str) -> str:
    """A label for matplotlib: ``$`` would start mathtext, and a class name is not maths."""
    return str(text).replace("$", r"\$")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)
