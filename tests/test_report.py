"""The HTML report: self-contained, every picture decodable, values in the table, sections only for data that exists."""

import base64
import io
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpnet.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}
DATA_PNG = "data:image/png;base64,"
PICTURE = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[0, 0, 0], [255, 255, 255], [9, 99, 199]]], np.uint8)


class Page(HTMLParser):
    """What the tests look at: image sources, figure captions, table cells by table id, and tag balance."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.captions, self.tables, self.stack = [], [], {}, []
        self.table_id = self.row = self.cell = None
        self.in_caption = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag not in VOID_TAGS:
            self.stack.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self.table_id = attrs.get("id")
            self.tables.setdefault(self.table_id, [])
        elif tag == "tr":
            self.row = []
            self.tables[self.table_id].append(self.row)
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "figcaption":
            self.in_caption = True
            self.captions.append("")

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"
        if tag in ("td", "th"):
            self.row.append(self.cell)
            self.cell = None
        elif tag == "figcaption":
            self.in_caption = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data
        if self.in_caption:
            self.captions[-1] += data


def write_picture(path: Path, array: np.ndarray = PICTURE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_work_dir(root: Path, metrics: dict, *, sweep=None, logs=(), pictures=(), config=None) -> Path:
    """A work dir as the stages leave it: metrics.json, eval_cam/sweep.json, STAGE/log.jsonl, pictures."""
    root.mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps(metrics))
    if sweep is not None:
        (root / "eval_cam").mkdir()
        (root / "eval_cam" / "sweep.json").write_text(json.dumps(sweep))
    for stage in logs:
        (root / stage).mkdir(exist_ok=True)
        lines = [{"epoch": 0, "step": s, "lr": 0.01, "images_per_s": 10.0,
                  "loss": 1.0 / s, "l_c": 0.9 / s, "l_s": 0.1 / s} for s in (1, 2, 3)]
        (root / stage / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for picture in pictures:
        write_picture(root / picture)
    if config is not None:
        (root / "train_cam").mkdir(exist_ok=True)
        (root / "train_cam" / "config.yaml").write_text(config)
    return root


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A baseline that ran every stage but CRF and RPNet that ran the CAM stages only."""
    tmp_path = tmp_path_factory.mktemp("runs")
    baseline = make_work_dir(tmp_path / "baseline", {
        "cam_miou": 19.5, "cam_threshold": 0.55, "cam_per_class": {"background": 70.0, "cat": 12.0, "dog": None},
        "pseudo_miou": 30.0, "pseudo_per_class": {"background": 80.0, "cat": 20.0, "dog": 5.0},
        "seg_miou": 33.333, "seg_per_class": {"background": 85.0, "cat": 30.0, "dog": 10.0},
    }, sweep={"thresholds": [0.1, 0.2, 0.3], "miou": [10.0, 25.5, 20.0]}, logs=("train_cam", "train_irn"),
        pictures=("eval_cam/pictures/val_1.png",), config="seed: 0\nmodel:\n  prototypes: false\n")
    rpnet = make_work_dir(tmp_path / "rpnet", {
        "cam_miou": 21.25, "cam_threshold": 0.45, "cam_per_class": {"background": 72.0, "cat": 14.0, "dog": 3.0},
    }, sweep={"thresholds": [0.1, 0.2, 0.3], "miou": [12.0, 18.0, 22.75]}, logs=("train_cam",),
        pictures=("eval_cam/pictures/val_2.png",), config="seed: 0\nmodel:\n  prototypes: true\n")
    return {"baseline": baseline, "rpnet": rpnet}


@pytest.fixture(scope="module")
def report(two_runs, tmp_path_factory) -> str:
    """The two runs' report (rendered once: matplotlib takes a second or two per report)."""
    return write_report(two_runs, tmp_path_factory.mktemp("report") / "out" / "report.html").read_text()


def test_report_is_self_contained_and_every_image_decodes(report):
    text = report
    page = Page(text)
    assert page.stack == []  # every element closed
    # 3 per-class charts (CAM, pseudo, seg), 1 threshold curve, 2 training plots, 1 example per run.
    assert len(page.images) == 3 + 1 + 2 + 2
    assert all(src.startswith(DATA_PNG) for src in page.images)
    for bad in ('src="http', "src='http", 'src="/', 'href="', "file:", "<script", "<link", "url(", "@import"):
        assert bad not in text
    decoded = []
    for src in page.images:
        with Image.open(io.BytesIO(base64.b64decode(src[len(DATA_PNG):], validate=True))) as img:
            assert img.format == "PNG" and img.width > 0 and img.height > 0
            decoded.append(np.array(img.convert("RGB")))
    # The example pictures go in byte for byte: the last two images are the fixtures' pixels.
    assert all(np.array_equal(d, PICTURE) for d in decoded[-2:])
    assert page.captions == ["val_1", "val_2"]
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
    assert "<summary>config of baseline (" in text and "prototypes: true" in text and "<p>Generated " in text


def test_metrics_table_has_one_column_per_run_and_dashes_for_missing(report):
    page = Page(report)
    assert page.tables["metrics_table"] == [
        ["", "baseline", "rpnet"],
        ["CAM mIoU (%)", "19.50", "21.25"],
        ["CAM background threshold", "0.55", "0.45"],
        ["pseudo-label mIoU (%)", "30.00", "—"],
        ["segmentation mIoU (%)", "33.33", "—"],
    ]  # no run has seg_miou_crf: no row for it


def test_per_class_values_are_listed_under_the_chart(report):
    page = Page(report)
    assert page.tables["cam_per_class"] == [
        ["class", "baseline", "rpnet"],
        ["background", "70.00", "72.00"],
        ["cat", "12.00", "14.00"],
        ["dog", "—", "3.00"],
    ]


def test_threshold_section_names_each_runs_best_point(report):
    text = report
    assert "baseline: best threshold 0.20, mIoU 25.50%" in text
    assert "rpnet: best threshold 0.30, mIoU 22.75%" in text


def test_training_section_plots_loss_terms_not_bookkeeping(report):
    text = report
    assert "<h3>train-cam</h3>" in text and "<h3>train-irn</h3>" in text and "<h3>train-seg</h3>" not in text
    assert text.count("<p>loss terms: loss, l_c, l_s</p>") == 2


def test_missing_stages_leave_their_sections_out(tmp_path):
    work = make_work_dir(tmp_path / "work", {"cam_miou": 19.5, "cam_per_class": {"background": 70.0, "cat": 12.0}})
    text = write_report({"run": work}, work / "report.html").read_text()
    page = Page(text)
    assert page.tables["metrics_table"] == [["", "run"], ["CAM mIoU (%)", "19.50"]]
    assert len(page.images) == 1  # the CAM per-class chart only
    for section in ('id="threshold"', 'id="training"', 'id="examples"', "<h3>pseudo labels</h3>", "config of"):
        assert section not in text


def test_an_empty_work_dir_still_gets_a_page(tmp_path):
    text = write_report({"run": tmp_path / "nothing"}, tmp_path / "report.html").read_text()
    assert "No stage has written results yet." in text and "<img" not in text
    with pytest.raises(ValueError, match="at least one work dir"):
        write_report({}, tmp_path / "report.html")


def test_examples_prefer_pseudo_pictures_and_spread_over_them(tmp_path):
    names = [f"eval_pseudo/pictures/p{i}.png" for i in range(5)]
    work = make_work_dir(tmp_path / "work", {}, pictures=["eval_cam/pictures/c0.png", *names])
    (work / "eval_pseudo" / "pictures" / "p5.png").write_bytes(b"not a png")  # a broken file is skipped
    text = write_report({"run": work}, tmp_path / "report.html").read_text()
    assert Page(text).captions == ["p0", "p2", "p4"]  # three of five, first, middle and last
    assert "<h3>run (eval_pseudo)</h3>" in text


def test_strings_from_files_are_escaped(tmp_path):
    work = make_work_dir(tmp_path / "work", {"cam_miou": 1.0, "cam_per_class": {"<b>": 50.0}},
                         pictures=["eval_cam/pictures/x<i>.png"], config="note: '<script>alert(1)</script>'\n")
    text = write_report({"a&b": work}, tmp_path / "report.html", title="<title>").read_text()
    assert "<b>" not in text and "&lt;b&gt;" in text
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<i>" not in text and "x&lt;i&gt;" in text
    assert "<th>a&amp;b</th>" in text and "<h1>&lt;title&gt;</h1>" in text


def test_rewriting_replaces_the_file_and_leaves_no_temporary_files(tmp_path):
    work = make_work_dir(tmp_path / "work", {"cam_miou": 1.0})
    out = tmp_path / "out" / "report.html"
    write_report({"run": work}, out, title="first")
    write_report({"run": work}, out, title="second")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    assert "<h1>second</h1>" in out.read_text()


# Counts, once the page has loaded, the images the browser decoded (complete, with a width).
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const shown = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  const marker = document.createElement("div");
  marker.id = "imgcheck";
  marker.textContent = `ok ${shown} of ${images.length}`;
  document.body.appendChild(marker);
});
</script>
"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
def test_report_renders_with_its_images_in_a_headless_browser(report, tmp_path):
    checked = tmp_path / "checked.html"  # a copy: the report itself carries no script
    checked.write_text(report.replace("</body>", IMAGE_CHECK + "</body>"))
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    n = len(Page(report).images)
    assert re.search(r'<div id="imgcheck">ok (\d+) of (\d+)</div>', dom).groups() == (str(n), str(n))
    assert "<h2>Metrics</h2>" in dom and "19.50" in dom


def grid_rows(text: str, run_index: int = 0) -> list[list[str]]:
    return Page(text).tables[f"predictions_{run_index}"]


def test_prediction_grid_shows_image_prediction_and_truth_of_eval_seg_images(tiny_voc, tmp_path):
    from rpnet.config import load_config, save_config
    from rpnet.io import load_mask, save_mask
    from rpnet.viz import colorize

    work = make_work_dir(tmp_path / "work", {"seg_miou": 40.0, "seg_miou_crf": 41.5})
    save_config(load_config(None, [f"data.root={tiny_voc}", f"work_dir={work}"]), work / "config.yaml")
    val_ids = (tiny_voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:2]
    prediction = np.zeros((64, 64), np.uint8)
    prediction[:, 32:] = 1  # right half class 1: VOC colour (128, 0, 0)
    for image_id in val_ids:
        save_mask(work / "eval_seg" / "masks" / f"{image_id}.png", prediction)
    write_picture(work / "eval_seg" / "pictures" / f"{val_ids[0]}.png")
    text = write_report({"run": work}, tmp_path / "report.html").read_text()

    page = Page(text)
    assert page.tables["metrics_table"][-2:] == [["segmentation mIoU (%)", "40.00"],
                                                 ["segmentation mIoU with CRF (%)", "41.50"]]
    rows = grid_rows(text)
    assert rows[0] == ["image id", "image", "CAM", "pseudo mask", "prediction", "ground truth"]
    assert [row[0] for row in rows[1:]] == sorted(val_ids)
    assert all(row[2:4] == ["—", "—"] for row in rows[1:])  # no CAM or pseudo mask for val images
    assert "<h3>run (eval_seg)</h3>" in text and val_ids[0] in page.captions
    # the grid's pictures: image, prediction, ground truth for each of the two rows
    grid = page.images[-6:]  # the grid comes last
    decoded = [np.array(Image.open(io.BytesIO(base64.b64decode(s[len(DATA_PNG):]))).convert("RGB")) for s in grid]
    truth = colorize(load_mask(tiny_voc / "SegmentationClass" / f"{sorted(val_ids)[0]}.png"))
    assert np.array_equal(decoded[1], colorize(prediction)) and decoded[1][0, 40].tolist() == [128, 0, 0]
    assert np.array_equal(decoded[2], truth) and decoded[0].shape == (64, 64, 3)


def test_prediction_grid_without_a_dataset_still_shows_the_predictions(tmp_path):
    from rpnet.io import save_mask

    work = make_work_dir(tmp_path / "work", {})
    save_mask(work / "eval_seg" / "masks" / "a.png", np.ones((4, 5), np.uint8))
    (work / "make_pseudo" / "masks").mkdir(parents=True)
    save_mask(work / "make_pseudo" / "masks" / "a.png", np.zeros((4, 5), np.uint8))
    text = write_report({"run": work}, tmp_path / "report.html").read_text()
    assert grid_rows(text)[1][0] == "a" and grid_rows(text)[1][1] == "—" and grid_rows(text)[1][5] == "—"
    assert len(Page(text).images) == 2  # pseudo mask and prediction


def test_calibration_section_lists_each_runs_thresholds_and_their_source(tmp_path):
    from rpnet.calibration import write_calibration

    a = make_work_dir(tmp_path / "a", {})
    b = make_work_dir(tmp_path / "b", {})
    write_calibration(a / "make_pseudo", {"bg_threshold": "auto"}, {"bg_threshold": 0.23})
    write_calibration(b / "make_pseudo", {"bg_threshold": 0.25}, {"bg_threshold": 0.31})
    page = Page(write_report({"a": a, "b": b}, tmp_path / "r.html").read_text())
    assert page.tables["calibration_table"][1:] == [["make-pseudo: bg_threshold", "0.230 (calibrated)",
                                                     "0.250 (configured)"]]


def test_estimates_from_a_calibration_split_show_with_their_interval(tmp_path):
    from rpnet.calibration import MaskCalibration, write_calibration

    a = make_work_dir(tmp_path / "a", {"cam_miou": 50.0, "cam_miou_estimate": 41.23, "cam_miou_estimate_low": 33.1,
                                      "cam_miou_estimate_high": 49.3})
    b = make_work_dir(tmp_path / "b", {"cam_miou": 45.0})
    write_calibration(a / "eval_cam", {"cam_threshold": "auto"}, {"cam_threshold": 0.18},
                      masks=MaskCalibration("few", ("x", "y"), {"cam_threshold": 0.4}))
    page = Page(write_report({"a": a, "b": b}, tmp_path / "r.html").read_text())
    assert ["CAM: mIoU estimated from the calibration masks (%)", "41.2 (90 % interval 33.1-49.3)", "—"] in \
        page.tables["metrics_table"]
    assert page.tables["calibration_table"][1:] == [["eval-cam: cam_threshold", "0.400 (chosen on masks)", ""]]


def test_warnings_head_the_page_per_run_and_the_training_curve_rows_show(tmp_path):
    a = make_work_dir(tmp_path / "a", {"seg_miou": 5.9, "pseudo_miou": 32.0, "seg_val_peak": 14.3,
                                      "seg_val_last": 5.9, "seg_model_epoch": 10, "seg_epochs": 10,
                                      "seg_val_peak_epoch": 2})
    b = make_work_dir(tmp_path / "b", {"seg_miou": 30.0, "pseudo_miou": 32.0})
    text = write_report({"a": a, "b": b}, tmp_path / "r.html").read_text()
    assert text.index('id="warnings"') < text.index('id="metrics"')
    assert "<li>a: segmentation scores 5.9 mIoU" in text and "<li>a: validation mIoU peaked at 14.3" in text
    assert "<li>b:" not in text
    rows = Page(text).tables["metrics_table"]
    assert ["segmentation val mIoU in training, peak (%)", "14.30", "—"] in rows
    assert ["epoch of model.safetensors", "10", "—"] in rows
    quiet = make_work_dir(tmp_path / "c", {"seg_miou": 30.0, "pseudo_miou": 32.0})
    assert 'id="warnings"' not in write_report({"c": quiet}, tmp_path / "q.html").read_text()


def test_short_training_curves_have_markers_and_a_missing_iou_says_n_a(monkeypatch):
    from matplotlib.axes import Axes

    from rpnet.report import per_class_plot, training_plot

    plots, texts = [], []
    real_plot, real_text = Axes.plot, Axes.text
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **k: plots.append(k) or real_plot(self, *a, **k))
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, *a, **k: texts.append(s) or real_text(self, x, y, s, *a, **k))
    training_plot({"a": [{"step": 9, "loss": 1.0}], "b": [{"step": s, "loss": 1.0} for s in range(1, 100)]}, ["loss"])
    assert [k["marker"] for k in plots] == ["o", None]  # one point: a marker; 99: a line
    per_class_plot(["background", "cat"], {"a": [90.0, None]})
    assert texts == ["n/a"]
