"""``rpnet sweep``: one run per (row, column), resumable, and a table in the paper's layout."""

import csv
import io
import json
from pathlib import Path

import pytest

from rpnet.cli import main
from rpnet.errors import ConfigError
from rpnet.sweep import load_sweep, plan_sweep, run_sweep, slug

SWEEP = """
title: "Table II (small)"
base: base.yaml
set: [eval_cam.threshold=0.2]
until: eval-cam
metrics: [cam_miou]
row_header: data volume
columns:
  - {name: baseline, set: [model.prototypes=false]}
  - {name: RPNet, set: [model.prototypes=true]}
rows:
  - {name: "1", set: [data.fraction=1.0], paper: {baseline: 48.3, RPNet: 52.8}}
  - {name: "1/2", set: [data.fraction=0.5], paper: {RPNet: 51.5}}
  - {name: "1/4", set: [data.fraction=0.25]}
"""


def write_sweep(tmp_path: Path, text: str = SWEEP) -> Path:
    (tmp_path / "base.yaml").write_text("seed: 3\nmodel:\n  backbone: resnet18\n")
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


class FakeRunner:
    """Writes metrics.json as a run would: cam_miou = 100 * fraction, +1 with prototypes; fails on request."""

    def __init__(self, fail_at: str | None = None):
        self.runs, self.fail_at = [], fail_at

    def __call__(self, cfg, *, until=None):
        if str(cfg.work_dir) == self.fail_at:
            raise RuntimeError("run failed")
        self.runs.append((str(cfg.work_dir), until, cfg.seed, cfg.eval_cam.threshold))
        metrics = cfg.work_dir / "metrics.json"
        if not metrics.exists():  # a finished run is not redone (the real runner's fingerprints)
            metrics.parent.mkdir(parents=True, exist_ok=True)
            metrics.write_text(json.dumps({"cam_miou": 100 * cfg.data.fraction + cfg.model.prototypes}))


def test_sweep_writes_one_row_per_setting_in_the_papers_layout(tmp_path):
    runner = FakeRunner()
    out = tmp_path / "out"
    table = run_sweep(write_sweep(tmp_path), out, runner=runner)
    assert [r[0] for r in runner.runs] == [str(out / r / c) for r in ("1", "1_2", "1_4") for c in ("baseline", "RPNet")]
    assert {r[1:] for r in runner.runs} == {("eval-cam", 3, 0.2)}  # until, base config, the sweep's `set`
    expected = [["data volume", "baseline", "RPNet", "baseline (paper)", "RPNet (paper)"],
                ["1", "100.00", "101.00", "48.30", "52.80"],
                ["1/2", "50.00", "51.00", "—", "51.50"],
                ["1/4", "25.00", "26.00", "—", "—"]]
    assert [table.header, *table.rows] == expected
    assert list(csv.reader(io.StringIO((out / "table.csv").read_text()))) == [
        [("" if c == "—" else c) for c in row] for row in expected]
    md = (out / "table.md").read_text().splitlines()
    assert md[0] == "# Table II (small)" and md[2] == "| data volume | baseline | RPNet | baseline (paper) | RPNet (paper) |"
    assert md[5] == "| 1/2 | 50.00 | 51.00 | — | 51.50 |" and len(md) == 7
    cells = json.loads((out / "table.json").read_text())["cells"]
    assert len(cells) == 6 and cells[1] == {
        "row": "1", "column": "RPNet", "metric": "cam_miou", "value": 101.0, "paper": 52.8,
        "work_dir": str(out / "1" / "RPNet"),
        "overrides": ["eval_cam.threshold=0.2", "data.fraction=1.0", "model.prototypes=true"]}


def test_a_failed_run_leaves_a_table_of_what_finished_and_a_rerun_completes_it(tmp_path):
    out, path = tmp_path / "out", write_sweep(tmp_path)
    with pytest.raises(RuntimeError):
        run_sweep(path, out, runner=FakeRunner(fail_at=str(out / "1_2" / "RPNet")))
    rows = (out / "table.csv").read_text().splitlines()
    assert rows[1:] == ["1,100.00,101.00,48.30,52.80", "1/2,50.00,,,51.50", "1/4,,,,"]
    table = run_sweep(path, out, runner=FakeRunner())
    assert [row[1:3] for row in table.rows] == [["100.00", "101.00"], ["50.00", "51.00"], ["25.00", "26.00"]]


def test_without_columns_each_metric_is_a_column(tmp_path):
    text = """
base: base.yaml
metrics: [cam_miou, pseudo_miou]
rows:
  - {name: a, paper: {pseudo_miou: 69.0}}
  - {name: b, set: [model.beta=0.7]}
"""
    out = tmp_path / "out"
    table = run_sweep(write_sweep(tmp_path, text), out, runner=FakeRunner())
    assert table.header == ["setting", "cam_miou", "pseudo_miou", "pseudo_miou (paper)"]
    assert table.rows == [["a", "101.00", "—", "69.00"], ["b", "101.00", "—", "—"]]
    assert (out / "a" / "metrics.json").exists() and (out / "b" / "metrics.json").exists()


@pytest.mark.parametrize("text, message", [
    ("base: base.yaml\nrows: []\n", "rows is empty"),
    ("base: base.yaml\nrow: []\n", "unknown key 'row'; valid keys: title, base"),
    ("base: nothere.yaml\nrows: [{name: a}]\n", "base config .*nothere.yaml not found"),
    ("base: base.yaml\nrows: [{name: a, set: [model.bta=1]}]\n", "row 'a': unknown config key 'model.bta'"),
    ("base: base.yaml\nrows: [{name: a/b}, {name: a b}]\n", "two rows have the same name"),
    ("base: base.yaml\nrows: [{name: a, paper: {RPNet: 1}}]\n", r"paper values for \['RPNet'\]"),
    ("base: base.yaml\nrows: [{set: [seed=1]}]\n", "must be a mapping with a name"),
])
def test_bad_sweep_files_are_errors_that_say_where(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        plan_sweep(write_sweep(tmp_path, text), tmp_path / "out")


def test_dry_run_lists_the_runs_and_runs_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run", "--set", "seed=5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and not (tmp_path / "out").exists()
    assert lines[3] == (f"{tmp_path / 'out' / '1_2' / 'RPNet'}: eval_cam.threshold=0.2 data.fraction=0.5 "
                        "model.prototypes=true seed=5")
    assert plan_sweep(path, tmp_path, ["seed=5"])[0].config.seed == 5


def test_slug_makes_folder_names():
    assert [slug(n) for n in ("1/16", "with GF", "block2+block4", "0.5", "../x", "..", "")] == \
        ["1_16", "with_GF", "block2+block4", "0.5", ".._x", "_", "_"]


def test_load_sweep_reads_settings_and_paper_values(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path))
    assert [r.name for r in sweep.rows] == ["1", "1/2", "1/4"] and sweep.until == "eval-cam"
    assert sweep.rows[1].paper == {"RPNet": 51.5} and sweep.columns[0].overrides == ("model.prototypes=false",)
