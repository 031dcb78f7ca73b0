"""rpnet.gallery on a work dir made by hand: a folder dataset of three photos (two tagged), no masks."""

import json
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from rpnet.config import load_config, save_config
from rpnet.gallery import class_counts, gallery_images, write_gallery
from rpnet.io import save_mask
from rpnet.layout import CamFile, WorkDir, save_cams
from rpnet.report import write_report
from test_report import CHROMIUM, IMAGE_CHECK, Page


@pytest.fixture
def work(tmp_path):
    """Photos a (cat, dog), b (cat), c (no tags); CAMs of a and b, a's confident labels, b's boundary
    map, both pseudo masks; no masks, no predictions."""
    root = tmp_path / "photos"
    (root / "images").mkdir(parents=True)
    for i, name in enumerate("abc"):
        Image.fromarray(np.full((8, 12, 3), 40 * i, np.uint8)).save(root / "images" / f"{name}.png")
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    (root / "tags.csv").write_text("image,tags\na.png,cat dog\nb.png,cat\n")
    work = tmp_path / "work"
    save_config(load_config(None, ["data.format=folder", f"data.root={root}", f"work_dir={work}"]),
                work / "config.yaml")
    ramp = np.linspace(0, 1, 96, dtype=np.float32).reshape(8, 12)
    both = np.stack([ramp, 1 - ramp])
    save_cams(WorkDir(work).cam("a"), CamFile(keys=np.array([0, 1]), cam=both[:, ::4, ::4], high_res=both))
    save_cams(WorkDir(work).cam("b"), CamFile(keys=np.array([0]), cam=ramp[None, ::4, ::4], high_res=ramp[None]))
    save_mask(work / "make_ir_label" / "labels" / "a.png", np.full((8, 12), 255))
    save_mask(work / "make_pseudo" / "boundaries" / "b.png", (ramp * 255).astype(np.uint8))
    for name in "ab":
        save_mask(work / "make_pseudo" / "masks" / f"{name}.png", np.ones((8, 12)))
    return work


def test_tagged_images_and_their_class_counts(work):
    records, names = gallery_images(load_config(work / "config.yaml"))
    assert [r.id for r in records] == ["a", "b"] and names == ["background", "cat", "dog"]
    assert class_counts(records, names) == {"cat": 2, "dog": 1}


def test_pages_rows_panels_legend_and_the_finder(work):
    index = write_gallery(work, page_size=1)
    text = index.read_text()
    assert json.loads(re.search(r"const where = (\{.*?\});", text).group(1)) == {"a": 1, "b": 2}
    assert Page(text).tables[None] == [["class", "tagged images"], ["cat", "2"], ["dog", "1"]]
    # the VOC colours: 0 black, 1 (128, 0, 0), 2 (0, 128, 0), 255 (224, 224, 192)
    assert re.findall(r'background:#([0-9a-f]{6})"></i>([a-z]+)<', text) == [
        ("000000", "background"), ("800000", "cat"), ("008000", "dog"), ("e0e0c0", "ignore")]
    page = Page((work / "gallery" / "page_001.html").read_text())
    assert page.captions == ["image", "CAM: cat", "CAM: dog", "confident labels", "boundaries", "pseudo mask",
                             "pseudo mask on the image", "prediction"]
    # pictures for what exists; a's boundary map and prediction do not: dashes
    assert page.images == [f"thumbs/a/{i}.png" for i in (0, 1, 2, 3, 5, 6)]
    assert Page((work / "gallery" / "page_002.html").read_text()).captions[:2] == ["image", "CAM: cat"]
    for src in page.images:
        assert Image.open(work / "gallery" / src).size == (12, 8)  # smaller than a thumbnail: kept


def test_the_review_page_lists_make_pseudo_s_review_rows_linked_to_their_gallery_rows(work):
    from rpnet.stages.make_pseudo import review_csv, review_rows

    assert "Review list" not in write_gallery(work).read_text()  # no review.csv yet: no page
    records, names = gallery_images(load_config(work / "config.yaml"))
    (work / "make_pseudo" / "review.csv").write_text(review_csv(review_rows(records, names, work / "make_pseudo" /
                                                                           "masks")))
    index = write_gallery(work, page_size=1).read_text()
    assert '<a href="review.html">Review list</a>: 1 tag(s) with an empty or tiny pseudo mask' in index
    page = Page((work / "gallery" / "review.html").read_text())
    # a's dog: no pixel of the all-cat masks; then a's and b's cat: the whole image
    assert page.tables[None][1:] == [["1", "a", "dog", "0.0", "empty"], ["2", "a", "cat", "100.0", ""],
                                     ["3", "b", "cat", "100.0", ""]]
    assert 'href="page_001.html#a"' in (work / "gallery" / "review.html").read_text()


def test_the_front_page_shows_the_estimates_of_a_calibration_split(work):
    assert "Estimated quality" not in write_gallery(work).read_text()
    (work / "metrics.json").write_text(json.dumps({"cam_miou_estimate": 41.23, "cam_miou_estimate_low": 33.1,
                                                   "cam_miou_estimate_high": 49.3, "pseudo_miou_estimate": 50.0,
                                                   "pseudo_miou_estimate_low": 40.0,
                                                   "pseudo_miou_estimate_high": 60.0}))
    text = write_gallery(work).read_text()
    assert ("CAM 41.2 (90 % interval 33.1-49.3); pseudo masks 50.0 (90 % interval 40.0-60.0)") in text


def test_a_rewrite_draws_only_the_rows_whose_sources_changed(work):
    write_gallery(work)
    drawn = {p: p.stat().st_mtime_ns for p in (work / "gallery" / "thumbs").rglob("*.png")}
    write_gallery(work)
    assert {p: p.stat().st_mtime_ns for p in drawn} == drawn
    save_mask(work / "make_pseudo" / "masks" / "b.png", np.zeros((8, 12)))  # make-pseudo ran again for b
    write_gallery(work)
    changed = sorted(p.parent.name for p in drawn if p.stat().st_mtime_ns != drawn[p])
    assert set(changed) == {"b"}


def test_the_report_shows_sample_rows_the_legend_and_links_the_gallery(work, tmp_path):
    out = write_report({"run": work}, tmp_path / "report.html")
    text = out.read_text()
    assert '<section id="gallery">' in text and 'href="work/gallery/index.html"' in text
    assert "CAM: dog" in text and "ignore</span>" in text


def test_a_work_dir_without_a_config_has_no_gallery(tmp_path):
    assert write_gallery(tmp_path) is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")
def test_the_report_and_a_gallery_page_render_in_a_headless_browser(work, tmp_path):
    report = write_report({"run": work}, tmp_path / "report.html")
    for page in (report, work / "gallery" / "page_001.html"):
        checked = page.with_name(f"checked_{page.name}")
        checked.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
        command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}",
                   "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()]
        dom = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
        shown, total = map(int, re.search(r'<div id="imgcheck">ok (\d+) of (\d+)</div>', dom).groups())
        assert shown == total > 0
        assert 'class="legend"' in dom and "dog" in dom
