"""``rpnet sweep SWEEP.yaml``: a grid of settings run with ``rpnet run``, and the table of their results.

A sweep file (see ``configs/sweeps/``) names a base config and the grid::

    title: "Table II: CAM mIoU (%) on VOC train with less training data"
    base: ../voc.yaml                 # relative to the sweep file
    set: [model.backbone=resnext50_32x4d]   # overrides for every run (optional)
    until: eval-cam                   # stop each run after this stage (optional)
    metrics: [cam_miou]               # metrics.json keys that fill the cells
    row_header: data volume           # the first column's heading (optional)
    columns:                          # optional; without it one column per metric
      - {name: baseline, set: [model.prototypes=false]}
      - {name: RPNet, set: [model.prototypes=true]}
    rows:
      - {name: "1/2", set: [data.fraction=0.5], paper: {baseline: 48.0, RPNet: 51.5}}

Each (row, column) runs in ``OUT/<row>/<column>/`` (``OUT/<row>/`` without columns), so a
rerun skips what finished (stage fingerprints) and continues what was killed. After each
run, ``OUT/table.md``, ``table.csv`` and ``table.json`` are rewritten: one row per setting,
one column per column and metric, then the paper's values when the sweep gives them (``paper``
keys are the table's headings: the column's name with one metric, else "column metric").
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import Config, load_config, read_yaml
from .engine.distributed import world
from .errors import ConfigError
from .io import atomic_write_text, read_json, write_json
from .layout import WorkDir
from .workdir import work_dir_lock

log = logging.getLogger(__name__)

SWEEP_KEYS = ("title", "base", "set", "until", "metrics", "row_header", "columns", "rows", "note")
SETTING_KEYS = ("name", "set", "paper")
MISSING = "—"
DEFAULT_ROW_HEADER = "setting"
DEFAULT_OUT_ROOT = Path("work_dirs")
METRIC_FORMAT = "{:.2f}"
PAPER_SUFFIX = " (paper)"


@dataclass(frozen=True)
class Setting:
    """A row or column of the grid: its label, its ``KEY=VALUE`` overrides, and the paper's values."""

    name: str
    overrides: tuple[str, ...] = ()
    paper: dict[str, float] = field(default_factory=dict)  # rows only: table heading -> the paper's number


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file (see the module docstring)."""

    path: Path
    title: str
    base: Path
    overrides: tuple[str, ...]
    until: str | None
    metrics: tuple[str, ...]
    row_header: str
    columns: tuple[Setting, ...]  # empty: one unnamed column
    rows: tuple[Setting, ...]
    note: str = ""


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its row, its column ("" without columns), its work dir and resolved config."""

    row: str
    column: str
    work_dir: Path
    overrides: tuple[str, ...]
    config: Config


@dataclass(frozen=True)
class Table:
    """The results in the paper's layout: ``header`` and ``rows`` of formatted cells, and the raw values."""

    title: str
    header: list[str]
    rows: list[list[str]]
    cells: list[dict[str, Any]]

    @property
    def markdown(self) -> str:
        lines = [f"| {' | '.join(self.header)} |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        return (f"# {self.title}\n\n" if self.title else "") + "\n".join(lines) + "\n"

    @property
    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows([["" if cell == MISSING else cell for cell in row] for row in self.rows])
        return buf.getvalue()


# --------------------------------------------------------------------------- reading


def load_sweep(path: str | Path) -> Sweep:
    """Parse and check a sweep file; errors name the file and the key."""
    path = Path(path)
    raw = read_yaml(path, "sweep")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    check_keys(raw, SWEEP_KEYS, str(path))
    for key in ("base", "rows"):
        if key not in raw:
            raise ConfigError(f"{path}: the key {key!r} is missing")
    base = path.parent / str(raw["base"])
    if not base.is_file():
        raise ConfigError(f"{path}: base config {base} not found")
    rows = tuple(setting(item, f"{path}: rows[{i}]") for i, item in enumerate(as_list(raw["rows"], f"{path}: rows")))
    columns = tuple(setting(item, f"{path}: columns[{i}]")
                    for i, item in enumerate(as_list(raw.get("columns", []), f"{path}: columns")))
    if not rows:
        raise ConfigError(f"{path}: rows is empty")
    metrics = tuple(str(m) for m in as_list(raw.get("metrics", ["cam_miou"]), f"{path}: metrics"))
    for what, settings in (("rows", rows), ("columns", columns)):
        names = [slug(s.name) for s in settings]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: two {what} have the same name (as folder names: {names})")
    labels = [label for _, _, label in cell_labels([c.name for c in columns], metrics)]
    for row in rows:
        unknown = sorted(set(row.paper) - set(labels))
        if unknown:
            raise ConfigError(f"{path}: row {row.name!r}: paper values for {unknown}, which are not columns "
                              f"of the table ({labels})")
    return Sweep(path=path, title=str(raw.get("title", path.stem)), base=base,
                 overrides=tuple(str(s) for s in as_list(raw.get("set", []), f"{path}: set")),
                 until=raw.get("until"), metrics=metrics,
                 row_header=str(raw.get("row_header", DEFAULT_ROW_HEADER)), columns=columns, rows=rows,
                 note=str(raw.get("note", "")))


def check_keys(raw: dict, valid: Sequence[str], where: str) -> None:
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")


def as_list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, got {value!r}")
    return value


def setting(raw: Any, where: str) -> Setting:
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{where} must be a mapping with a name (and set, paper), got {raw!r}")
    check_keys(raw, SETTING_KEYS, where)
    paper = raw.get("paper", {}) or {}
    if not isinstance(paper, dict) or not all(isinstance(v, (int, float)) for v in paper.values()):
        raise ConfigError(f"{where}: paper must map column names to numbers, got {paper!r}")
    return Setting(str(raw["name"]), tuple(str(s) for s in as_list(raw.get("set", []), f"{where}: set")),
                   {str(k): float(v) for k, v in paper.items()})


def slug(name: str) -> str:
    """A setting's name as a folder name: ``1/2`` -> ``1_2``, ``block2+block4`` -> ``block2+block4``."""
    text = re.sub(r"[^A-Za-z0-9.+=-]+", "_", name).strip("_")
    return text if text.strip(".") else "_"  # never "", "." or "..": those are not a folder of its own


def default_out(path: str | Path) -> Path:
    """``work_dirs/<sweep file name>``: where a sweep runs when ``--out`` is not given."""
    return DEFAULT_OUT_ROOT / Path(path).stem


# --------------------------------------------------------------------------- planning and running


def plan_sweep(sweep: str | Path | Sweep, out: str | Path, extra: Sequence[str] = ()) -> list[Cell]:
    """Every run of the grid, row by row, with its config built (so a bad key fails before anything runs).

    ``extra``: ``KEY=VALUE`` overrides for every run (the command line's ``--set``), applied after the
    sweep's own.
    """
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    out = Path(out)
    cells = []
    for row in sweep.rows:
        for column in sweep.columns or (Setting(""),):
            work = out / slug(row.name) / slug(column.name) if column.name else out / slug(row.name)
            overrides = (*sweep.overrides, *row.overrides, *column.overrides, *extra)
            try:
                cfg = load_config(sweep.base, [*overrides, f"work_dir={work}"])
            except ConfigError as exc:
                where = f"row {row.name!r}" + (f", column {column.name!r}" if column.name else "")
                raise ConfigError(f"{sweep.path}: {where}: {exc}") from None
            cells.append(Cell(row.name, column.name, work, overrides, cfg))
    return cells


def run_sweep(sweep: str | Path | Sweep, out: str | Path, extra: Sequence[str] = (), *,
              runner: Callable[..., Any] | None = None) -> Table:
    """Run every cell with ``runner(cfg, until=...)`` (default: :func:`rpnet.pipeline.run_pipeline`) and
    write ``OUT/table.md``, ``table.csv`` and ``table.json`` after each. Returns the final table."""
    if runner is None:
        from .pipeline.runner import run_pipeline as runner
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    cells = plan_sweep(sweep, out, extra)
    # One sweep per output folder (rank 0 holds the lock under torchrun); each cell's run locks its own work dir.
    with work_dir_lock(out) if world().is_main else contextlib.nullcontext():
        return run_cells(sweep, cells, out, runner)


def run_cells(sweep: Sweep, cells: Sequence[Cell], out: Path, runner: Callable[..., Any]) -> Table:
    """Run the cells in order, writing the tables after each (and after a failure)."""
    try:
        for i, cell in enumerate(cells, 1):
            log.info("sweep: run %d of %d: %s %s -> %s", i, len(cells), cell.row, cell.column, cell.work_dir)
            runner(cell.config, until=sweep.until)
            if i < len(cells):  # the table so far, readable while the next run trains
                write_tables(sweep_table(sweep, cells), out)
    finally:  # also after a failed run: the table of what finished
        table = write_tables(sweep_table(sweep, cells), out)
    return table


def format_plan(cells: Sequence[Cell]) -> str:
    """``--dry-run``: one line per run: its work dir and overrides."""
    return "\n".join(f"{cell.work_dir}: {' '.join(cell.overrides) or '(base config)'}" for cell in cells)


# --------------------------------------------------------------------------- the table


def cell_metrics(cell: Cell) -> dict[str, Any]:
    path = WorkDir(cell.work_dir).metrics
    return read_json(path) if path.exists() else {}


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def cell_labels(columns: Sequence[str], metrics: Sequence[str]) -> list[tuple[str, str, str]]:
    """(column, metric, heading) per measured column of the table: the column's name alone when there is
    one metric, the metric's alone without columns, else both (``RPNet seg_miou``)."""
    labels = []
    for column in columns or [""]:
        for metric in metrics:
            label = column if column and len(metrics) == 1 else " ".join(filter(None, [column, metric]))
            labels.append((column, metric, label))
    return labels


def sweep_table(sweep: Sweep, cells: Sequence[Cell]) -> Table:
    """The grid's results: one row per setting, a cell per column and metric, then the paper's values
    (``paper`` keys are the measured columns' headings)."""
    labels = cell_labels([c.name for c in sweep.columns], sweep.metrics)
    paper_labels = [label for _, _, label in labels if any(label in row.paper for row in sweep.rows)]
    header = [sweep.row_header, *(label for _, _, label in labels), *(f"{p}{PAPER_SUFFIX}" for p in paper_labels)]
    by_key = {(cell.row, cell.column): cell for cell in cells}
    rows, records = [], []
    for row in sweep.rows:
        metrics = {column: cell_metrics(by_key[(row.name, column)]) for column in dict.fromkeys(c for c, _, _ in labels)}
        values = []
        for column, metric, label in labels:
            value = number(metrics[column].get(metric))
            values.append(MISSING if value is None else METRIC_FORMAT.format(value))
            cell = by_key[(row.name, column)]
            records.append({"row": row.name, "column": column, "metric": metric, "value": value,
                            "paper": row.paper.get(label), "work_dir": str(cell.work_dir),
                            "overrides": list(cell.overrides)})
        paper = [METRIC_FORMAT.format(row.paper[p]) if p in row.paper else MISSING for p in paper_labels]
        rows.append([row.name, *values, *paper])
    return Table(sweep.title, header, rows, records)


def write_tables(table: Table, out: str | Path) -> Table:
    """``OUT/table.md``, ``table.csv``, ``table.json``, each written atomically."""
    out = Path(out)
    atomic_write_text(out / "table.md", table.markdown)
    atomic_write_text(out / "table.csv", table.csv)
    write_json(out / "table.json", {"title": table.title, "header": table.header, "rows": table.rows,
                                    "cells": table.cells})
    return table
