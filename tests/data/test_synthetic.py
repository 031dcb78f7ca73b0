import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from rpnet.cli import main
from rpnet.data.synthetic import (
    BG_CONTEXT,
    BG_OTHER,
    CLASS_NAMES,
    CLASS_SETS,
    CLASSES,
    COCO_CATEGORY_IDS,
    DISTRACTOR_MIN_HEAD_DISTANCE,
    CONTEXT_PROB,
    CONTEXTS,
    HEAD_AREA_FRACTION,
    PART_BODY,
    PART_DIR,
    PART_HEAD,
    PRETRAIN_CLASSES,
    PROFILES,
    STRAY_CONTEXT_PROB,
    SUITE_PROFILES,
    SynthSpec,
    generate,
    part_map,
    render_indexed,
    render_sample,
    sample_id,
    spec_from_overrides,
)
from rpnet.errors import ConfigError
from rpnet.io import IGNORE_INDEX, load_mask

SIZE = 64
N_TRAIN, N_VAL = 12, 4
NUM_CLASSES = len(CLASS_NAMES)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("voc"), n_train=N_TRAIN, n_val=N_VAL, size=SIZE, seed=3, fmt="voc")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _xml_names(path: Path) -> set[str]:
    return {el.text for el in ET.parse(path).getroot().iterfind("object/name")}


def _mask_names(mask: np.ndarray) -> set[str]:
    return {CLASS_NAMES[v - 1] for v in np.unique(mask) if v not in (0, IGNORE_INDEX)}


# --- one sample in memory -------------------------------------------------------------

def test_same_generator_state_gives_the_same_sample_and_another_seed_does_not():
    a, b, c = (render_sample(_rng(s), SIZE) for s in (7, 7, 8))
    assert a.image.shape == (SIZE, SIZE, 3) and a.image.dtype == np.uint8
    assert a.mask.shape == (SIZE, SIZE) and a.mask.dtype == np.uint8
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.context == b.context
    assert [o.bbox for o in a.objects] == [o.bbox for o in b.objects]
    for oa, ob in zip(a.objects, b.objects):
        np.testing.assert_array_equal(oa.head, ob.head)
    assert not np.array_equal(a.image, c.image)


def _differs_from_a_neighbour(inst: np.ndarray) -> np.ndarray:
    """True where one of the 8 neighbours (inside the image) has another instance id."""
    h, w = inst.shape
    padded = np.pad(inst, 1, mode="edge")
    out = np.zeros((h, w), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] != inst
    return out


def test_mask_is_visible_objects_with_a_one_pixel_ignore_band_each_side_of_every_boundary():
    for seed in range(25):
        sample = render_sample(_rng(seed), SIZE)
        assert set(np.unique(sample.mask)) <= set(range(NUM_CLASSES + 1)) | {IGNORE_INDEX}
        inst = np.zeros((SIZE, SIZE), dtype=np.int64)
        labels = np.zeros((SIZE, SIZE), dtype=np.uint8)
        for j, obj in enumerate(sample.objects):
            assert not (inst[obj.visible] > 0).any(), "visible regions of two objects overlap"
            inst[obj.visible] = j + 1
            labels[obj.visible] = obj.class_index + 1
        band = _differs_from_a_neighbour(inst)
        np.testing.assert_array_equal(sample.mask == IGNORE_INDEX, band)
        np.testing.assert_array_equal(sample.mask[~band], labels[~band])
        if sample.objects:
            assert band.any()


def test_parts_are_disjoint_the_head_is_the_small_part_and_visible_lies_on_the_object():
    fractions = []
    for seed in range(40):
        for obj in render_sample(_rng(seed), SIZE).objects:
            assert not (obj.head & obj.body).any()
            assert not (obj.visible & ~(obj.head | obj.body)).any()
            assert obj.head.sum() < obj.body.sum()
            x0, y0, x1, y1 = obj.bbox
            rows, cols = np.nonzero(obj.visible)
            assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max(), rows.max())
            fractions.append(obj.head.sum() / (obj.head | obj.body).sum())
    # Heads cut by the image edge shrink, so look at the middle of the distribution.
    lo, hi = HEAD_AREA_FRACTION
    assert lo * 0.8 <= np.median(fractions) <= hi * 1.1
    assert np.percentile(fractions, 90) < hi * 1.2


def test_scenes_hold_one_to_three_objects_and_usually_one_or_two_classes():
    counts, class_counts = [], []
    for seed in range(60):
        objects = render_sample(_rng(seed), SIZE).objects
        counts.append(len(objects))
        class_counts.append(len({o.class_index for o in objects}))
    assert set(counts) <= {1, 2, 3} and {1, 2, 3} <= set(counts)
    assert np.mean(np.array(class_counts) <= 2) >= 0.75
    assert max(class_counts) >= 2


def test_context_backgrounds_co_occur_with_their_class_and_are_drawn():
    n = 200
    with_context = co_occurring = 0
    prevalence = np.zeros(NUM_CLASSES)
    context_counts = np.zeros(NUM_CLASSES)
    bg_colour, context_of = [], []
    for seed in range(n):
        sample = render_sample(_rng(seed), SIZE)
        present = {o.class_index for o in sample.objects}
        prevalence[list(present)] += 1
        if sample.context is not None:
            with_context += 1
            context_counts[sample.context] += 1
            co_occurring += sample.context in present
            bg_colour.append(sample.image[sample.mask == 0].mean(0) / 255.0)
            context_of.append(sample.context)
    # Chance: how often class c would be present in an image with c's context if the
    # context were drawn independently of the objects.
    chance = float((context_counts / with_context) @ (prevalence / n))
    rate = co_occurring / with_context
    # A context of a present class with CONTEXT_PROB, else a stray one with STRAY_CONTEXT_PROB
    # (which may still name a present class by chance), else none.
    expected = CONTEXT_PROB + (1 - CONTEXT_PROB) * STRAY_CONTEXT_PROB
    assert abs(with_context / n - expected) < 0.1
    assert rate >= CONTEXT_PROB / expected - 0.1 and rate > 2 * chance and chance < 0.4

    # The texture is really drawn: the background's mean colour names the context.
    reference = np.array([CONTEXTS[style.context](_rng(0), SIZE).reshape(-1, 3).mean(0) for style in CLASSES])
    nearest = np.linalg.norm(np.array(bg_colour)[:, None] - reference[None], axis=2).argmin(1)
    assert np.mean(nearest == np.array(context_of)) > 0.7


# --- designs (profiles) ---------------------------------------------------------------

def _objects(spec: SynthSpec, n: int = 60) -> list:
    return [o for seed in range(n) for o in render_sample(_rng(seed), SIZE, spec).objects]


def test_a_profile_changes_what_its_fields_say():
    # large-objects: body semi-major axis 0.36-0.50 of the side, head 8-14 % of the object
    default, large = _objects(PROFILES["default"]), _objects(PROFILES["large-objects"])
    area = lambda objs: np.median([o.body.sum() + o.head.sum() for o in objs])  # noqa: E731
    head_share = lambda objs: np.median([o.head.sum() / (o.body.sum() + o.head.sum()) for o in objs])  # noqa: E731
    assert area(large) > 1.3 * area(default)
    assert head_share(large) < head_share(default)
    # few-classes: 3 classes only; crowded: up to 4 objects
    assert {o.class_index for o in _objects(PROFILES["few-classes"])} <= {0, 1, 2}
    assert max(len(render_sample(_rng(s), SIZE, PROFILES["crowded"]).objects) for s in range(40)) == 4
    # small-context: 80 % of the images show a present class's context
    contexts = [render_sample(_rng(s), SIZE, PROFILES["small-context"]).context for s in range(80)]
    assert np.mean([c is not None for c in contexts]) > 0.7


def test_the_default_spec_is_the_default_dataset_and_synth_json_records_the_design(tmp_path):
    a = generate(tmp_path / "a", n_train=3, n_val=1, size=SIZE, seed=1)
    b = generate(tmp_path / "b", n_train=3, n_val=1, size=SIZE, seed=1, spec=spec_from_overrides("default"))
    assert _files(a) == _files(b)
    c = generate(tmp_path / "c", n_train=3, n_val=1, size=SIZE, seed=1,
                 spec=spec_from_overrides("crowded", ["context_prob=0.5"]))
    spec = json.loads((c / "synth.json").read_text())["spec"]
    assert spec["context_prob"] == 0.5 and spec["objects_per_image"] == list(PROFILES["crowded"].objects_per_image)


def test_bad_designs_are_refused_by_name():
    with pytest.raises(ConfigError, match="unknown synthetic profile 'huge'"):
        spec_from_overrides("huge")
    with pytest.raises(ConfigError, match="context_prob"):
        spec_from_overrides("default", ["context_prob=1.5"])
    with pytest.raises(ConfigError, match="objects_per_image"):
        SynthSpec(objects_per_image=(0.5, 0.4))
    with pytest.raises(ConfigError, match="num_classes"):
        SynthSpec(num_classes=0)


def test_the_pretraining_classes_are_other_classes():
    # names, head colour pairs and (pattern, colour) combinations: none of the default set's
    assert not set(style.name for style in PRETRAIN_CLASSES) & set(CLASS_NAMES)
    assert len(PRETRAIN_CLASSES) == 12 and len({style.name for style in PRETRAIN_CLASSES}) == 12
    default_heads = {frozenset(style.head_colours) for style in CLASSES}
    assert not {frozenset(style.head_colours) for style in PRETRAIN_CLASSES} & default_heads
    # every pattern twice, every context of the default set used, each class's context exists
    patterns = [style.head_pattern for style in PRETRAIN_CLASSES]
    assert all(patterns.count(p) == 2 for p in set(patterns))
    assert {style.context for style in PRETRAIN_CLASSES} == set(CONTEXTS)
    # two classes with the same pattern differ in colour by more than the distractors keep away from a head
    for a in PRETRAIN_CLASSES:
        for b in PRETRAIN_CLASSES:
            if a is not b and a.head_pattern == b.head_pattern:
                gap = max(np.abs(np.subtract(ca, cb)).sum() for ca, cb in zip(a.head_colours, b.head_colours))
                assert gap > DISTRACTOR_MIN_HEAD_DISTANCE


def test_the_pretrain_profile_draws_the_twelve_classes_with_their_names_and_contexts(tmp_path):
    spec = PROFILES["pretrain"]
    assert spec.class_set == "pretrain" and spec.class_names == tuple(s.name for s in PRETRAIN_CLASSES)
    samples = [render_sample(_rng(s), SIZE, spec) for s in range(60)]
    drawn = {o.class_index for sample in samples for o in sample.objects}
    assert drawn <= set(range(12)) and len(drawn) >= 9  # 60 images, 1-3 classes each: most classes show up
    for sample in samples:
        for obj in sample.objects:
            assert obj.name == PRETRAIN_CLASSES[obj.class_index].name
            assert np.all(sample.mask[obj.visible & (sample.mask != IGNORE_INDEX)] == obj.class_index + 1)
    root = generate(tmp_path / "p", n_train=4, n_val=0, size=SIZE, seed=2, spec=spec)
    record = json.loads((root / "synth.json").read_text())
    assert record["classes"][1:] == [s.name for s in PRETRAIN_CLASSES]
    assert record["contexts"]["cow"] == "grass" and record["spec"]["class_set"] == "pretrain"
    coco = generate(tmp_path / "c", n_train=2, n_val=0, size=SIZE, seed=2, spec=spec, fmt="coco")
    categories = json.loads((coco / "annotations" / "instances_train2014.json").read_text())["categories"]
    assert [c["id"] for c in categories] == list(COCO_CATEGORY_IDS[:12])
    assert set(CLASS_SETS) == {"default", "pretrain"}
    assert "pretrain" not in SUITE_PROFILES and {"default", "small-context", "few-classes"} <= set(SUITE_PROFILES)


def test_an_unknown_class_set_or_too_many_classes_for_it_is_refused():
    with pytest.raises(ConfigError, match="class_set"):
        SynthSpec(class_set="imagenet")
    with pytest.raises(ConfigError, match="num_classes must be 1..6 for class set 'default'"):
        SynthSpec(num_classes=12)
    assert SynthSpec(class_set="pretrain", num_classes=12).num_classes == 12


def test_render_sample_rejects_a_tiny_image():
    with pytest.raises(ValueError, match="at least"):
        render_sample(_rng(0), 8)


# --- datasets on disk -------------------------------------------------------------------

def test_generate_is_byte_identical_for_the_same_arguments(tmp_path):
    a = generate(tmp_path / "a", n_train=4, n_val=2, size=SIZE, seed=5)
    b = generate(tmp_path / "b", n_train=4, n_val=2, size=SIZE, seed=5)
    c = generate(tmp_path / "c", n_train=4, n_val=2, size=SIZE, seed=6)
    files_a, files_c = _files(a), _files(c)
    assert files_a == _files(b)
    assert files_a.keys() == files_c.keys()
    assert files_a["JPEGImages/synth_000000.jpg"] != files_c["JPEGImages/synth_000000.jpg"]


def test_voc_layout_ids_splits_and_class_list(voc_root):
    split_dir = voc_root / "ImageSets" / "Segmentation"
    train = split_dir.joinpath("train.txt").read_text().split()
    val = split_dir.joinpath("val.txt").read_text().split()
    assert train == [f"synth_{i:06d}" for i in range(N_TRAIN)]
    assert val == [f"synth_{i:06d}" for i in range(N_TRAIN, N_TRAIN + N_VAL)]
    assert voc_root.joinpath("classes.txt").read_text().split() == ["background", *CLASS_NAMES]
    meta = json.loads(voc_root.joinpath("synth.json").read_text())
    assert (meta["n_train"], meta["n_val"], meta["size"], meta["seed"]) == (N_TRAIN, N_VAL, SIZE, 3)
    assert meta["classes"] == ["background", *CLASS_NAMES]
    for stem in train + val:
        with Image.open(voc_root / "JPEGImages" / f"{stem}.jpg") as img:
            assert img.format == "JPEG" and img.size == (SIZE, SIZE)
        root = ET.parse(voc_root / "Annotations" / f"{stem}.xml").getroot()
        assert root.findtext("filename") == f"{stem}.jpg"
        assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (SIZE, SIZE)
        for obj in root.iterfind("object"):
            box = [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            assert 1 <= box[0] <= box[2] <= SIZE and 1 <= box[1] <= box[3] <= SIZE  # 1-based


def test_every_mask_label_has_an_xml_tag_and_every_tag_a_label(voc_root):
    for stem in voc_root.joinpath("ImageSets", "Segmentation", "train.txt").read_text().split():
        mask = load_mask(voc_root / "SegmentationClass" / f"{stem}.png")
        assert _xml_names(voc_root / "Annotations" / f"{stem}.xml") == _mask_names(mask)
        assert _mask_names(mask), f"{stem} has no object"


def test_voc_round_trip_through_the_loader(voc_root):
    from rpnet.data.dataset import read_mask_file
    from rpnet.data.voc import load_voc

    records, names = load_voc(voc_root, "val")
    assert names == ["background", *CLASS_NAMES]
    assert [r.id for r in records] == [sample_id(i) for i in range(N_TRAIN, N_TRAIN + N_VAL)]
    for index, record in zip(range(N_TRAIN, N_TRAIN + N_VAL), records):
        sample = render_indexed(3, index, SIZE)
        np.testing.assert_array_equal(read_mask_file(record), sample.mask)
        assert set(record.tags) == {o.class_index for o in sample.objects}
        jpeg = np.asarray(Image.open(record.image).convert("RGB"), dtype=np.float64)
        # Quality 95 with 4:2:0 chroma keeps a few levels of the pixel noise; another image is ~50 off.
        assert np.abs(jpeg - sample.image).mean() < 8.0


def test_cli_writes_the_voc_layout(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--n-train", "6", "--n-val", "2", "--size", "64"]) == 0
    assert str(out) in capsys.readouterr().out
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 8
    assert len(list((out / "Annotations").glob("*.xml"))) == 8
    assert len(list((out / "SegmentationClass").glob("*.png"))) == 8
    assert len((out / "ImageSets" / "Segmentation" / "train.txt").read_text().split()) == 6


def test_cli_reports_a_bad_size_in_one_line(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "x"), "--size", "8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "size" in err[0]


def test_generate_rejects_an_unknown_format_and_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="coco.*folder.*voc"):
        generate(tmp_path, n_train=1, n_val=0, size=SIZE, fmt="png")


def test_folder_layout_parses_with_consistent_ids(tmp_path):
    root = generate(tmp_path / "f", n_train=5, n_val=3, size=SIZE, seed=1, fmt="folder")
    with open(root / "tags.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["image", "tags"]
    train = root.joinpath("train.txt").read_text().split()
    val = root.joinpath("val.txt").read_text().split()
    assert len(train) == 5 and len(val) == 3 and not set(train) & set(val)
    assert [r["image"] for r in rows] == train + val
    assert root.joinpath("classes.txt").read_text().split() == ["background", *CLASS_NAMES]
    for row in rows:
        stem = Path(row["image"]).stem
        assert (root / "images" / row["image"]).is_file()
        mask = load_mask(root / "masks" / f"{stem}.png")
        assert set(row["tags"].split()) == _mask_names(mask)


def test_folder_round_trip_through_the_loader(tmp_path):
    from rpnet.data.folder import load_folder

    root = generate(tmp_path / "f", n_train=3, n_val=1, size=SIZE, seed=2, fmt="folder")
    records, names = load_folder(root, "train")
    assert names == ["background", *CLASS_NAMES]
    for index, record in enumerate(records):
        sample = render_indexed(2, index, SIZE)
        assert record.id == sample_id(index)
        assert set(record.tags) == {o.class_index for o in sample.objects}
        np.testing.assert_array_equal(np.asarray(Image.open(record.image).convert("RGB")), sample.image)


def test_coco_layout_parses_with_consistent_ids_and_masks(tmp_path):
    root = generate(tmp_path / "c", n_train=5, n_val=3, size=SIZE, seed=4, fmt="coco")
    seen_images: set[int] = set()
    for split, count in (("train2014", 5), ("val2014", 3)):
        data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        cat_ids = [c["id"] for c in data["categories"]]
        assert [c["name"] for c in data["categories"]] == list(CLASS_NAMES)
        assert cat_ids != list(range(1, NUM_CLASSES + 1)), "category ids should have gaps, like COCO's"
        images = {img["id"]: img for img in data["images"]}
        assert len(images) == count and not seen_images & images.keys()
        seen_images |= images.keys()
        painted = {i: np.zeros((SIZE, SIZE), dtype=np.uint8) for i in images}
        for ann in data["annotations"]:
            img = images[ann["image_id"]]
            assert ann["iscrowd"] == 0 and ann["category_id"] in cat_ids
            seg = ann["segmentation"]
            rle = (mask_utils.merge(mask_utils.frPyObjects(seg, SIZE, SIZE)) if isinstance(seg, list) else seg)
            region = mask_utils.decode(rle).astype(bool)
            x, y, w, h = ann["bbox"]
            rows, cols = np.nonzero(region)
            assert (cols.min(), rows.min()) == (x, y) and (cols.max() + 1, rows.max() + 1) == (x + w, y + h)
            assert ann["area"] == region.sum()
            painted[img["id"]][region] = cat_ids.index(ann["category_id"]) + 1
        for image_id, img in images.items():
            assert (root / split / img["file_name"]).is_file()
            assert img["file_name"] == f"{sample_id(image_id - 1)}.jpg"  # COCO ids start at 1
            mask = render_indexed(4, image_id - 1, SIZE).mask
            known = mask != IGNORE_INDEX
            np.testing.assert_array_equal(painted[image_id][known], mask[known])


def test_coco_round_trip_through_the_loader(tmp_path):
    from rpnet.data.coco import load_coco

    root = generate(tmp_path / "c", n_train=2, n_val=3, size=SIZE, seed=9, fmt="coco")
    records, names, masks = load_coco(root, "val2014")
    # Category ids 1, 2, 3, 5, 7, 11 map to labels 1..6: the VOC layout's labels.
    assert names == ["background", *CLASS_NAMES]
    assert [r.id for r in records] == [sample_id(i) for i in (2, 3, 4)]
    for index, record in zip((2, 3, 4), records):
        sample = render_indexed(9, index, SIZE)
        assert set(record.tags) == {o.class_index for o in sample.objects}
        known = sample.mask != IGNORE_INDEX  # COCO has no ignore band
        np.testing.assert_array_equal(masks(record)[known], sample.mask[known])


def test_part_map_by_hand():
    # a 3x4 scene: one object (label 2) on the right with its head in the top-right corner, an ignore pixel,
    # and a context band over the left column
    mask = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 255, 2]], np.uint8)
    head = np.zeros((3, 4), bool)
    head[0, 3] = True
    head[0, 0] = True  # drawn under the background there: not a visible head pixel
    context = np.zeros((3, 4), bool)
    context[:, 0] = True
    assert part_map(mask, [head], context).tolist() == [[BG_CONTEXT, BG_OTHER, PART_BODY, PART_HEAD],
                                                        [BG_CONTEXT, BG_OTHER, PART_BODY, PART_BODY],
                                                        [BG_CONTEXT, BG_OTHER, IGNORE_INDEX, PART_BODY]]


def test_written_part_maps_agree_with_the_masks_and_mark_context_only_where_its_class_is_present(voc_root):
    seen_context = False
    for index in range(N_TRAIN):
        sample = render_indexed(3, index, SIZE)
        parts = load_mask(voc_root / PART_DIR / f"{sample_id(index)}.png")
        mask = load_mask(voc_root / "SegmentationClass" / f"{sample_id(index)}.png")
        assert np.array_equal(parts, sample.parts)
        assert np.array_equal(parts == IGNORE_INDEX, mask == IGNORE_INDEX)
        assert np.array_equal(np.isin(parts, [PART_HEAD, PART_BODY]), (mask != 0) & (mask != IGNORE_INDEX))
        present = {o.class_index for o in sample.objects}
        if (parts == BG_CONTEXT).any():
            seen_context = True
            assert sample.context in present
        for obj in sample.objects:  # every head pixel that shows is a part pixel
            assert (parts[obj.head & obj.visible & (mask != IGNORE_INDEX)] == PART_HEAD).all()
    assert seen_context


def test_synth_never_writes_over_a_users_folder_or_another_dataset(tmp_path):
    from rpnet.errors import ConfigError

    user = tmp_path / "photos"
    (user / "images").mkdir(parents=True)
    (user / "tags.csv").write_text("image,tags\nmine.jpg,dog\n")
    with pytest.raises(ConfigError, match="is not empty .* no dataset `rpnet synth` wrote"):
        generate(user, n_train=2, n_val=0, size=64, fmt="folder")
    assert (user / "tags.csv").read_text() == "image,tags\nmine.jpg,dog\n" and not list((user / "images").iterdir())
    data = generate(tmp_path / "synth", n_train=2, n_val=1, size=64)
    before = (data / "ImageSets" / "Segmentation" / "train.txt").read_bytes()
    (data / "ImageSets" / "Segmentation" / "calib.txt").write_text("synth_000001\n")  # the user's addition
    generate(data, n_train=2, n_val=1, size=64)  # the same dataset again: allowed, the same bytes
    assert (data / "ImageSets" / "Segmentation" / "train.txt").read_bytes() == before
    assert (data / "ImageSets" / "Segmentation" / "calib.txt").is_file()
    with pytest.raises(ConfigError, match=r"other settings \(n_train\)"):
        generate(data, n_train=3, n_val=1, size=64)
