"""The per-image gallery of a work dir: what each stage made of each tagged training image.

Without masks the figures in ``metrics.json`` do not exist, and a user judges a run by looking
at it. For every tagged image of the training split the gallery shows, side by side: the
image, each tagged class's CAM over it, the confident labels of make-ir-label, IRN's boundary
map, the pseudo mask, and the segmentation model's prediction where eval-seg wrote one, with
a legend of the class colours. It is a folder, ``WORK_DIR/gallery/``: ``index.html`` (the
legend, images per class, links to the pages, and a box that finds an image by its id), and
pages of :data:`PAGE_SIZE` images whose thumbnails are PNG files under ``thumbs/`` (drawn
again only when a stage has rewritten their source), so a few thousand images stay navigable. :func:`sample_rows` gives the few rows the main report embeds.
"""

from __future__ import annotations

import csv
import html
import json
import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .io import atomic_path, atomic_write_text, load_mask, readable, voc_palette
from .layout import WorkDir, load_cams

PAGE_SIZE = 50
SKIPPED = "left out of the gallery; `rpnet run --from STAGE` with the stage that wrote it writes it again"
THUMBNAIL_PX = 160
SAMPLE_ROWS = 4  # rows of the gallery the main report shows


@dataclass(frozen=True)
class Panel:
    """One picture of a row: its caption and its (H, W, 3) uint8 pixels (None: the stage made none)."""

    caption: str
    pixels: np.ndarray | None


def gallery_images(cfg) -> tuple[list, list[str]]:
    """(the tagged records of the training split, the class names) of a run's config."""
    from .data.build import build_dataset

    dataset = build_dataset(cfg.data, cfg.data.train_split)
    return [r for r in dataset.records if r.tags], list(dataset.class_names)


class GalleryRun(NamedTuple):
    """What a gallery shows of one run: its training split, tagged records and class names."""

    split: str
    records: list
    class_names: list[str]


def read_gallery_run(work_dir: str | Path) -> GalleryRun | None:
    """The run in ``work_dir`` read through its ``config.yaml``; None when the config or the dataset
    cannot be read (a work dir without a config, a dataset that has moved): nothing to show."""
    from .config import load_config
    from .errors import RpnetError

    work_dir = Path(work_dir)
    try:
        cfg = load_config(WorkDir(work_dir).config, [f"work_dir={work_dir}"])
        return GalleryRun(cfg.data.train_split, *gallery_images(cfg))
    except (RpnetError, OSError, ValueError):
        return None


def class_counts(records: Sequence, class_names: Sequence[str]) -> dict[str, int]:
    """Images tagged with each class (background left out), in class-list order."""
    counts = np.zeros(len(class_names) - 1, dtype=np.int64)
    for record in records:
        counts[list(record.tags)] += 1
    return {name: int(n) for name, n in zip(class_names[1:], counts)}


def image_panels(work_dir: Path, record, class_names: Sequence[str]) -> list[Panel]:
    """The row of one image: image, one CAM per tagged class, confident labels, boundaries, pseudo mask (alone
    and over the image), prediction. Reads only what the stages wrote (no model runs)."""
    from .data.images import read_image
    from .viz import colorize, label_overlay, overlay

    work = WorkDir(work_dir)
    image = read_image(record.image)
    cams = load_cams(work.cam(record.id)) if readable(work.cam(record.id), SKIPPED) else None
    panels = [Panel("image", image)]
    for tag in sorted(record.tags):
        heat = None
        if cams is not None and tag in cams.keys:
            heat = overlay(image, cams.high_res[list(cams.keys).index(tag)].astype(np.float32))
        panels.append(Panel(f"CAM: {class_names[tag + 1]}", heat))

    def labels(path: Path) -> np.ndarray | None:
        return colorize(load_mask(path)) if readable(path, SKIPPED) else None

    boundary = work.boundaries / f"{record.id}.png"
    pseudo = work.pseudo_masks / f"{record.id}.png"
    on_image = label_overlay(image, load_mask(pseudo)) if readable(pseudo, SKIPPED) else None
    panels += [Panel("confident labels", labels(work.ir_labels / f"{record.id}.png")),
               Panel("boundaries", grey_at(load_mask(boundary), image.shape[:2]) if readable(boundary, SKIPPED) else None),
               Panel("pseudo mask", labels(pseudo)), Panel("pseudo mask on the image", on_image),
               Panel("prediction", labels(work.seg_masks / f"{record.id}.png"))]
    return panels


def grey_at(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (h, w) uint8 map (e.g. boundaries at stride 4) as an (H, W, 3) grey picture at the image's size."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(values, dtype=np.uint8)).resize((size[1], size[0]), Image.NEAREST)
    return np.repeat(np.asarray(picture)[..., None], 3, axis=2)


def thumbnail_png(pixels: np.ndarray) -> bytes:
    """A picture shrunk to :data:`THUMBNAIL_PX` on its long side, as PNG bytes."""
    import io as bytes_io

    from PIL import Image

    picture = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = bytes_io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def legend_html(class_names: Sequence[str]) -> str:
    """The class colours of every label map (VOC palette; 255 is "ignore"), as a row of swatches."""
    palette = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    entries = [*enumerate(class_names), (255, "ignore")]
    items = "".join(f'<span class="swatch"><i style="background:#{bytes(palette[k]).hex()}"></i>{html.escape(name)}'
                    "</span>" for k, name in entries)
    return f'<div class="legend">{items}</div>'


def counts_html(counts: dict[str, int]) -> str:
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td class=\"num\">{n}</td></tr>" for name, n in counts.items())
    return f'<table class="counts"><tr><th>class</th><th>tagged images</th></tr>{rows}</table>'


def figure_html(caption: str, src: str | None) -> str:
    """A captioned picture loaded from ``src`` (a dash without one)."""
    picture = f'<img loading="lazy" src="{html.escape(src)}" alt="{html.escape(caption)}">' if src else "—"
    return f"<figure>{picture}<figcaption>{html.escape(caption)}</figcaption></figure>"


def row_html(image_id: str, cells: Sequence[tuple[str, str | None]]) -> str:
    """One image's row: its id (an anchor) and a figure per panel; ``cells``: (caption, picture src or None)."""
    figures = "".join(figure_html(caption, src) for caption, src in cells)
    return f'<div class="row" id="{html.escape(image_id)}"><h3>{html.escape(image_id)}</h3>{figures}</div>'


# The rows and the legend, shared with the main report's gallery section.
ROW_STYLE = """
.row { display: flex; flex-wrap: wrap; gap: 0.5em; align-items: flex-start; border-top: 1px solid #ddd; }
.row h3, .row h4 { width: 100%; margin: 0.4em 0 0; font-size: 1em; }
.legend { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 0.5em 0; }
.swatch i { display: inline-block; width: 1em; height: 1em; margin-right: 0.3em; vertical-align: middle;
            border: 1px solid #999; }
"""
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em; color: #222; }
figure { margin: 0; } figcaption { font-size: 0.8em; color: #555; text-align: center; }
td.num { text-align: right; }
""" + ROW_STYLE


def page_html(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n")


def source_stamp(work_dir: Path, record) -> list[int]:
    """The modification times (ns; 0 for a missing file) of everything a row is drawn from."""
    work = WorkDir(work_dir)
    paths = [Path(record.image), work.cam(record.id), work.ir_labels / f"{record.id}.png",
             work.boundaries / f"{record.id}.png", work.pseudo_masks / f"{record.id}.png",
             work.seg_masks / f"{record.id}.png"]
    return [p.stat().st_mtime_ns if p.is_file() else 0 for p in paths]


def gallery_row(out: Path, work_dir: Path, record, class_names: Sequence[str]) -> list[tuple[str, str | None]]:
    """(caption, thumbnail path relative to ``out``) per panel of one image, drawing the thumbnails only
    when a source has changed since they were drawn (``thumbs/<id>/row.json`` keeps the stamp)."""
    folder = out / "thumbs" / record.id
    stamp = source_stamp(work_dir, record)
    try:
        kept = json.loads((folder / "row.json").read_text())
        if kept["stamp"] == stamp and all(src is None or (out / src).is_file() for _, src in kept["cells"]):
            return [tuple(cell) for cell in kept["cells"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cells = []
    for i, panel in enumerate(image_panels(work_dir, record, class_names)):
        src = None
        if panel.pixels is not None:
            with atomic_path(folder / f"{i}.png") as tmp:
                tmp.write_bytes(thumbnail_png(panel.pixels))
            src = f"thumbs/{record.id}/{i}.png"
        cells.append((panel.caption, src))
    atomic_write_text(folder / "row.json", json.dumps({"stamp": stamp, "cells": cells}))
    return cells


def write_gallery(work_dir: str | Path, run: GalleryRun | None = None, page_size: int = PAGE_SIZE) -> Path | None:
    """Write ``WORK_DIR/gallery/`` for the run in ``work_dir`` (``run``: read from it when not given);
    returns its index.html, or None when there is nothing to show (:func:`read_gallery_run`)."""
    work_dir = Path(work_dir)
    run = run or read_gallery_run(work_dir)
    if run is None:
        return None
    records, class_names = run.records, run.class_names
    out = WorkDir(work_dir).gallery
    pages = max(1, math.ceil(len(records) / page_size))
    where: dict[str, int] = {}
    for page in range(pages):
        rows = []
        for record in records[page * page_size:(page + 1) * page_size]:
            where[record.id] = page + 1
            rows.append(row_html(record.id, gallery_row(out, work_dir, record, class_names)))
        nav = " ".join(f'<a href="{page_name(p)}">{p}</a>' if p != page + 1 else f"<b>{p}</b>"
                       for p in range(1, pages + 1))
        body = (f'<p><a href="index.html">index</a> · page {nav}</p>\n{legend_html(class_names)}\n' + "\n".join(rows))
        atomic_write_text(out / page_name(page + 1), page_html(f"{work_dir.name}: page {page + 1} of {pages}", body))
    finder = ('<p><label>find an image: <input id="find" list="ids" placeholder="image id"></label> '
              '<a id="go" href="#"></a></p>\n<datalist id="ids"></datalist>\n'
              f"<script>const where = {json.dumps(where)};\n"
              "const list = document.getElementById('ids');\n"
              "for (const id of Object.keys(where)) { const o = document.createElement('option'); o.value = id; "
              "list.appendChild(o); }\n"
              "document.getElementById('find').addEventListener('input', e => { const p = where[e.target.value]; "
              "const a = document.getElementById('go'); a.textContent = p ? 'page ' + p : ''; "
              "a.href = p ? 'page_' + String(p).padStart(3, '0') + '.html#' + encodeURIComponent(e.target.value) "
              ": '#'; });</script>")
    links = " ".join(f'<a href="{page_name(p)}">{p}</a>' for p in range(1, pages + 1))
    review = write_review_page(work_dir, out, where)
    body = (f"<p>{len(records)} tagged images of split {html.escape(run.split)}, {page_size} per page: "
            f"{links}</p>\n{quality_html(work_dir)}{review}{finder}\n<h2>Colours</h2>\n{legend_html(class_names)}\n<h2>Images per class</h2>\n"
            f"{counts_html(class_counts(records, class_names))}")
    return atomic_write_text(out / "index.html", page_html(f"{work_dir.name}: gallery", body))


REVIEW_PAGE = "review.html"
REVIEW_ROWS = 200  # the review page lists this many (image, tag) rows at most; review.csv has them all


def write_review_page(work_dir: Path, out: Path, where: dict[str, int]) -> str:
    """``gallery/review.html``: make-pseudo's review list (``make_pseudo/review.csv``, the tags whose pseudo
    mask is smallest first), each image linked to its gallery row. Returns the index's paragraph about it
    ("" without a review list)."""
    path = WorkDir(work_dir).review
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return ""
    flagged = sum(1 for row in rows if row.get("flag"))
    cells = []
    for row in rows[:REVIEW_ROWS]:
        image = html.escape(row.get("image", ""))
        page = where.get(row.get("image", ""))
        link = (f'<a href="{page_name(page)}#{urllib.parse.quote(row.get("image", ""))}">{image}</a>'
                if page else image)
        cells.append(f"<tr><td>{html.escape(row.get('rank', ''))}</td><td>{link}</td><td>{html.escape(row.get('tag', ''))}"
                     f"</td><td>{html.escape(row.get('percent_of_image', ''))}</td><td>{html.escape(row.get('flag', ''))}"
                     "</td></tr>")
    body = (f'<p><a href="index.html">index</a></p>\n<p>Each tag of each image with the share of the image its pseudo '
            f"mask gives it, smallest first: {flagged} flagged empty or tiny. Outline these first "
            f"(docs/own-data.md); all {len(rows)} rows are in {html.escape(str(path))}.</p>\n<table>\n"
            "<tr><th>rank</th><th>image</th><th>tag</th><th>% of image</th><th>flag</th></tr>\n"
            + "\n".join(cells) + "\n</table>")
    atomic_write_text(out / REVIEW_PAGE, page_html(f"{work_dir.name}: pseudo masks to review", body))
    return (f'<p><a href="{REVIEW_PAGE}">Review list</a>: {flagged} tag(s) with an empty or tiny pseudo mask, the '
            "smallest first.</p>\n")


def quality_html(work_dir: Path) -> str:
    """The mIoU estimates a calibration split gave (metrics.json), as a paragraph; "" without them."""
    from .calibration import ESTIMATES, estimate_text

    path = WorkDir(work_dir).metrics
    try:
        metrics = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        metrics = {}
    texts = [f"{what} {text}" for prefix, what in ESTIMATES.items()
             if isinstance(metrics, dict) and (text := estimate_text(metrics, prefix))]
    if not texts:
        return ""
    return (f"<p><b>Estimated quality</b> (mIoU %, from the masks of the calibration split, which nothing is "
            f"scored on): {html.escape('; '.join(texts))}.</p>\n")


def page_name(page: int) -> str:
    return f"page_{page:03d}.html"


def sample_rows(work_dir: str | Path, run: GalleryRun, count: int = SAMPLE_ROWS) -> list[tuple[str, list[Panel]]]:
    """A few rows spread over the gallery's images (for the main report): (image id, panels)."""
    records = run.records
    if not records:
        return []
    picks = dict.fromkeys(np.linspace(0, len(records) - 1, min(count, len(records))).round().astype(int).tolist())
    return [(records[i].id, image_panels(Path(work_dir), records[i], run.class_names)) for i in picks]
