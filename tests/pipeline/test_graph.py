"""The stage declarations (rpnet.stages.STAGES) match the stage modules: no config section read unlisted,
upstream before downstream, no stage importing another."""

import ast
import inspect
import textwrap

import pytest

from pathlib import Path

from rpnet import stages
from rpnet.config import Config
from rpnet.layout import WorkDir, stage_folder
from rpnet.pipeline.graph import RUNTIME_KEYS, scored_split, scoring_stages, stage_order, stage_spec

CFG = "cfg"  # what every stage module calls the Config it receives


def config_reads(source: str, namespace: dict, seen: set) -> set[str]:
    """Config keys read in ``source``: ``"pseudo"`` for ``cfg.pseudo`` (the section, or any key of it), and
    ``"eval_cam.threshold"`` where ``cfg.eval_cam`` is only ever read as ``cfg.eval_cam.threshold``;
    following calls that pass ``cfg`` on to other rpnet functions (e.g. ``ir_label_dataset(cfg)``)."""
    reads = set()
    tree = ast.parse(textwrap.dedent(source))
    keyed = set()  # the cfg.X nodes that are the value of a cfg.X.Y
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id == CFG):
            reads.add(f"{node.value.attr}.{node.attr}")
            keyed.add(id(node.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == CFG:
            if id(node) not in keyed:
                reads.add(node.attr)
        elif isinstance(node, ast.Call) and any(isinstance(a, ast.Name) and a.id == CFG for a in node.args):
            func = namespace.get(node.func.id) if isinstance(node.func, ast.Name) else None
            if inspect.isfunction(func) and func.__module__.startswith("rpnet.") and func not in seen:
                seen.add(func)
                reads |= config_reads(inspect.getsource(func), vars(inspect.getmodule(func)), seen)
    return reads


def undeclared(reads: set[str], declared: set[str]) -> set[str]:
    """The reads no declaration covers: a declared section covers itself and each of its keys."""
    return {r for r in reads if r not in declared and r.split(".")[0] not in declared}


@pytest.mark.parametrize("name", stages.names())
def test_each_stage_reads_only_the_sections_it_declares(name):
    module = stages.load(name)
    reads = config_reads(inspect.getsource(module), vars(module), set())
    assert reads, "the source scan found no cfg.* read: the check would pass vacuously"
    unlisted = undeclared(reads, set(stages.stage(name).sections) | RUNTIME_KEYS)
    assert not unlisted, f"{name} reads config sections {sorted(unlisted)} that its declaration does not list"


def test_the_scan_follows_helpers_into_other_modules():
    from rpnet.stages import train_irn

    # train_irn reads cfg.ir_label only through common.ir_label_dataset.
    assert "ir_label" not in {n.attr for n in ast.walk(ast.parse(inspect.getsource(train_irn)))
                              if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == CFG}
    assert "ir_label" in {r.split(".")[0] for r in config_reads(inspect.getsource(train_irn), vars(train_irn), set())}


def test_a_single_declared_key_covers_only_itself():
    source = "def f(cfg):\n    a = cfg.eval_cam.threshold\n    b = cfg.pseudo\n    return cfg.data.root\n"
    reads = config_reads(source, {}, set())
    assert reads == {"eval_cam.threshold", "pseudo", "data.root"}
    assert undeclared(reads, {"eval_cam.threshold", "pseudo", "data"}) == set()
    assert undeclared(reads | {"eval_cam"}, {"eval_cam.threshold", "pseudo", "data"}) == {"eval_cam"}
    assert undeclared({"eval_cam.sweep"}, {"eval_cam.threshold"}) == {"eval_cam.sweep"}


def test_upstream_stages_come_first_and_sections_exist():
    order = stages.names()
    sections = set(Config.__dataclass_fields__)
    assert len(set(order)) == len(order)
    for spec in stages.STAGES:
        assert all(order.index(u) < order.index(spec.name) for u in spec.upstream), spec.name
        assert {k.split(".")[0] for k in spec.sections} <= sections, spec.name
        assert spec.scores is None or spec.scores in sections


def test_the_order_and_folders_come_from_the_declarations():
    assert stage_order() == ["train-cam", "make-cam", "eval-cam", "make-ir-label", "train-irn", "make-pseudo",
                             "eval-pseudo", "train-seg", "eval-seg"]
    assert stage_folder("make-ir-label") == "make_ir_label"
    # a partial order (a test running part of the pipeline) keeps only the upstream stages it has
    assert stage_spec("eval-pseudo", ["make-cam", "eval-cam", "eval-pseudo"]).upstream == ("make-cam", "eval-cam")
    with pytest.raises(Exception, match="unknown stage 'make-mess'"):
        stages.stage("make-mess")


def test_scoring_stages_score_the_split_their_section_names(tiny_cfg):
    assert scoring_stages() == ["eval-cam", "eval-pseudo"]
    cfg = tiny_cfg("eval_cam.split=val")
    assert scored_split(cfg, "eval-cam") == "val"
    assert scored_split(cfg, "eval-pseudo") == cfg.data.train_split  # its split is null: the train split
    assert scored_split(cfg, "train-cam") is None


STAGES_DIR = Path(stages.__file__).parent


@pytest.mark.parametrize("path", sorted(STAGES_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_stage_module_imports_another(path):
    """Stages hand each other files (rpnet.layout), never code: a stage module imports only downward."""
    siblings = {s.module.rsplit(".", 1)[1] for s in stages.STAGES}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {a.name for a in node.names}
            imported = ({module.rsplit(".", 1)[-1]} if node.level == 1 or module.startswith("rpnet.stages.") else set())
            if node.level == 1 and not module:
                imported = names
            assert not imported & siblings, f"{path.name} imports stage module(s) {imported & siblings}"


def test_the_stage_table_imports_no_torch():
    """``rpnet --help`` reads the declarations: loading them must not pull in torch."""
    import subprocess
    import sys

    code = "import sys, rpnet.stages, rpnet.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_runtime_keys_name_real_config_keys():
    from rpnet.config import Config, to_dict

    raw = to_dict(Config())
    for key in RUNTIME_KEYS:
        node = raw
        for part in key.split("."):
            assert part in node, f"RUNTIME_KEYS names {key}, which the config does not have"
            node = node[part]


def test_a_new_stage_is_one_module_and_one_declaration(tmp_path, monkeypatch, fake, fake_cfg):
    """What adding a stage takes: its module (here written to tmp_path) and its Stage line. The CLI
    gets its command, `rpnet run` runs it after its upstream, and its fingerprint covers what it declares."""
    import sys

    from rpnet.cli import build_parser
    from rpnet.pipeline import run_pipeline
    from rpnet.pipeline.fingerprint import stage_fingerprints

    (tmp_path / "count_cams.py").write_text(
        "from rpnet.layout import WorkDir\n"
        "from rpnet.stages.common import stage_dir\n"
        "def run(cfg, *, resume=False):\n"
        "    out = stage_dir(cfg, 'count-cams')\n"
        "    n = len(list(WorkDir(cfg.work_dir).stage('make-cam').glob('item*.txt')))\n"
        "    (out / 'count.txt').write_text(str(n))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "count_cams", raising=False)
    new = stages.Stage("count-cams", "count_cams", ("eval_cam",), ("make-cam",), "count the CAM files", "count.txt")
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES, new))
    monkeypatch.setitem(fake.modules, "count-cams", __import__("count_cams"))

    assert build_parser().parse_args(["count-cams", "c.yaml"]).stage == "count-cams"
    cfg = fake_cfg()
    results = run_pipeline(cfg)
    assert [r.name for r in results][-1] == "count-cams"
    assert (WorkDir(cfg.work_dir).stage("count-cams") / "count.txt").read_text() == "4"  # the fake's 4 items
    base = stage_fingerprints(cfg)
    assert stage_fingerprints(fake_cfg("eval_cam.sweep=[0.1,0.9,0.1]"))["count-cams"] != base["count-cams"]
    assert stage_fingerprints(fake_cfg("train_irn.lr=0.5"))["count-cams"] == base["count-cams"]
