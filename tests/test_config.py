import dataclasses
from pathlib import Path

import pytest
import yaml

from rpnet.config import Config, dump_config, load_config, parse_override, save_config, with_overrides
from rpnet.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_sections_map_onto_dataclasses(tmp_path):
    cfg = load_config(write(tmp_path, "seed: 3\ndata: {root: /d, fraction: 0.25}\nmodel: {backbone: resnet18, beta: 1}\n"))
    assert cfg.seed == 3
    assert cfg.data.root == Path("/d") and cfg.data.fraction == 0.25
    assert cfg.model.backbone == "resnet18"
    assert cfg.model.beta == 1.0 and isinstance(cfg.model.beta, float)  # int accepted for a float
    assert cfg.model.alpha == 0.3  # defaults kept


def test_overrides_win_and_are_parsed_as_yaml(tmp_path):
    cfg = load_config(write(tmp_path, "model: {prototypes: true}\n"),
                      ["model.prototypes=false", "make_cam.scales=[1.0, 0.5]", "model.pretrained=null"])
    assert cfg.model.prototypes is False
    assert cfg.make_cam.scales == (1.0, 0.5)
    assert cfg.model.pretrained is None


@pytest.mark.parametrize("override, named", [
    ("model.bogus=1", "model.bogus"),
    ("bogus.x=1", "bogus"),
    ("model.beta=abc", "model.beta"),
    ("model.prototypes=3", "model.prototypes"),
    ("model.group_size=2.5", "model.group_size"),
    ("model.output_stride=12", "model.output_stride"),
    ("train_cam.resize_long=[1]", "train_cam.resize_long"),
    ("model.prototype_levels=[block9]", "prototype_levels"),
    ("seed=null", "seed"),
    ("train_irn.boundary_prior=1.0", "train_irn.boundary_prior"),
    ("train_irn.fg_pos_weight=0", "train_irn.fg_pos_weight"),
])
def test_bad_keys_and_types_are_rejected_naming_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, [override])


@pytest.mark.parametrize("override, message", [
    ("train_cam.epochs=0", "'train_cam.epochs' must be >= 1, got 0"),  # random weights written, before
    ("train_cam.epochs=-2", "'train_cam.epochs' must be >= 1, got -2"),
    ("make_cam.scales=[]", "'make_cam.scales' must not be empty"),  # all-zero CAMs, before
    ("eval_seg.scales=[0.0]", r"'eval_seg.scales\[0\]' must be > 0, got 0.0"),  # 1x1 px inference, before
    ("train_cam.lr=-0.1", "'train_cam.lr' must be > 0"),
    ("train_seg.weight_decay=-1", "'train_seg.weight_decay' must be >= 0"),
    ("train_cam.crop_size=0", "'train_cam.crop_size' must be >= 1"),
    ("train_irn.batch_size=0", "'train_irn.batch_size' must be >= 1, got 0"),  # not "a multiple of 2"
    ("train_seg.max_steps=0", "'train_seg.max_steps' must be >= 1"),
    ("pseudo.steps=0", "'pseudo.steps' must be >= 1"),
    ("model.alpha=1.5", "'model.alpha' must be >= 0 and <= 1"),
    ("seed=-1", "'seed' must be >= 0"),
    ("train_seg.scale_range=[1.5, 0.5]", "'train_seg.scale_range' must be in increasing order"),
    ("train_cam.resize_long=[0, 64]", r"'train_cam.resize_long\[0\]' must be >= 1"),
    ("eval_cam.sweep=[0.5, 0.1, 0.1]", "eval_cam.sweep is \\[start, stop, step\\]"),
    ("train_cam.batch_size=3", "train_cam.batch_size 3 must be a multiple of model.group_size 2"),
    # 1/4 of a 64 px crop is 16 cells; radius 10 pairs span 2 x 9 = 18 of them
    ("train_irn.crop_size=64", "train_irn.crop_size 64 is too small for train_irn.path_radius 10.* crop_size > 72"),
])
def test_out_of_range_values_are_refused_before_any_work(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_boundary_values_that_work_are_accepted():
    cfg = load_config(None, ["train_irn.crop_size=80", "train_irn.path_radius=10", "ir_label.workers=0",
                             "eval_cam.num_pictures=0", "train_seg.weight_decay=0", "model.lambda_s=0",
                             "train_cam.resize_long=[64, 64]", "eval_cam.sweep=[0.5, 0.5, 0.1]"])
    assert cfg.train_irn.crop_size == 80 and cfg.train_cam.resize_long == (64, 64)


def test_override_needs_equals_sign():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("model.beta")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["model.backbone=resnet101", "data.root=/x", "eval_cam.sweep=[0.1, 0.5, 0.1]"])
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(dump_config(cfg))["model"]["backbone"] == "resnet101"


def test_with_overrides_is_checked():
    cfg = with_overrides(Config(), model={"prototypes": False})
    assert cfg.model.prototypes is False and cfg.model.beta == 0.5
    with pytest.raises(ConfigError):
        with_overrides(Config(), model={"nope": 1})


def test_unknown_backbone_is_rejected_when_the_config_is_read():
    with pytest.raises(ConfigError, match="resnet50"):  # the message lists the valid names
        load_config(None, ["model.backbone=resnet9"])


def test_segmentation_sections_defaults_and_checks():
    cfg = load_config(None, ["train_seg.labels=gt", "eval_seg.scales=[1.0, 0.5]"])
    assert cfg.train_seg.labels == "gt" and cfg.eval_seg.scales == (1.0, 0.5)
    assert cfg.train_seg.architecture == "deeplab_largefov" and cfg.train_seg.output_stride == 8  # docs/method.md stage 8
    with pytest.raises(ConfigError, match="train_seg.labels"):
        load_config(None, ["train_seg.labels=crf"])
    with pytest.raises(ConfigError, match="resnet50"):
        load_config(None, ["train_seg.backbone=resnet9"])


def test_variant_keys_take_the_variants_values_unless_given():
    from dataclasses import fields

    from rpnet.config import VARIANT_DEFAULTS, ModelConfig

    assert set(VARIANT_DEFAULTS["paper"]) == set(VARIANT_DEFAULTS["released"])
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    assert all(defaults[key] is None for key in VARIANT_DEFAULTS["paper"])  # null: the variant decides
    paper, released = ModelConfig(), ModelConfig(variant="released")
    assert paper.variant == "paper"
    for key in VARIANT_DEFAULTS["paper"]:
        assert paper.resolve(key) == VARIANT_DEFAULTS["paper"][key]
        assert released.resolve(key) == VARIANT_DEFAULTS["released"][key]
    assert (released.resolve("foreground_gain"), released.resolve("reduce_dim")) == (1.3, 512)
    mixed = ModelConfig(variant="released", foreground_gain=1.0, lc_on_enhanced=True)  # a given value wins
    assert (mixed.resolve("foreground_gain"), mixed.resolve("lc_on_enhanced"), mixed.resolve("lc_on_original")) == (
        1.0, True, True)
    cfg = load_config(None, ["model.variant=released", "model.reduce_dim=0"])
    assert cfg.model.resolve("reduce_dim") == 0 and cfg.model.resolve("non_local") is True
    switched = with_overrides(load_config(None), model={"variant": "released"})  # nulls stay nulls
    assert switched.model.resolve("compare") == "same_level"


@pytest.mark.parametrize("override, message", [
    ("model.variant=released_code", "variant"),
    ("model.lc_on_original=false", "L_c would train nothing"),  # with the released L_c off the enhanced branch
    ("model.ls_target_scales=[0.5, 2.0]", "must hold 1.0"),
    ("model.compare=last_level", "same_level"),
    ("model.reduce_dim=-1", "reduce_dim"),
])
def test_released_variant_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.variant=released", override])


def test_stage_1_schedule_follows_model_pretrained_where_its_keys_are_left_null():
    pretrained = load_config(None, ["model.pretrained=weights/r50.pth"]).train_cam
    assert (pretrained.epochs, pretrained.lr, pretrained.momentum) == (5, 0.02, 1e-4)  # docs/method.md, IRN's quirk
    scratch = load_config(None).train_cam
    assert (scratch.epochs, scratch.lr, scratch.momentum) == (15, 0.01, 0.9)
    mixed = load_config(None, ["model.pretrained=w.pth", "train_cam.lr=0.05"]).train_cam
    assert (mixed.epochs, mixed.lr, mixed.momentum) == (5, 0.05, 1e-4)  # a value given wins, key by key
    again = load_config(None, ["model.pretrained=w.pth"])
    assert dataclasses.replace(again, seed=3).train_cam == again.train_cam  # resolved once, kept


def test_numbers_with_an_exponent_a_momentum_of_one_and_keys_given_twice(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as text; it is still the number the user meant
    assert load_config(None, ["train_cam.lr=1e-3"]).train_cam.lr == 0.001
    (tmp_path / "c.yaml").write_text("train_cam:\n  lr: 2e-2\n")
    assert load_config(tmp_path / "c.yaml").train_cam.lr == 0.02
    with pytest.raises(ConfigError, match="'train_cam.lr' must be float, got 'fast'"):
        load_config(None, ["train_cam.lr=fast"])
    with pytest.raises(ConfigError, match="'train_seg.momentum' must be >= 0 and < 1, got 2.0"):
        load_config(None, ["train_seg.momentum=2"])
    (tmp_path / "twice.yaml").write_text("train_cam:\n  lr: 0.1\n  epochs: 2\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match="key 'lr' is given twice"):
        load_config(tmp_path / "twice.yaml")
    (tmp_path / "bom.yaml").write_bytes("\ufefftrain_cam:\n  epochs: 3\n".encode("utf-8"))
    assert load_config(tmp_path / "bom.yaml").train_cam.epochs == 3
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match="binary.yaml: not a text file"):
        load_config(tmp_path / "binary.yaml")
