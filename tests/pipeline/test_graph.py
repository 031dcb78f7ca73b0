"""The dependency graph matches the stage modules: every stage listed, no config section read unlisted."""

import ast
import importlib
import inspect
import textwrap

import pytest

from rpnet import cli
from rpnet.config import Config
from rpnet.pipeline.graph import GRAPH, RUNTIME_KEYS, StageSpec, stage_folder, stage_order, stage_spec

CFG = "cfg"  # what every stage module calls the Config it receives


def config_reads(source: str, namespace: dict, seen: set) -> set[str]:
    """Top-level config keys read as ``cfg.KEY`` in ``source``, following calls that pass ``cfg`` on
    to functions of other rpnet.stages modules (e.g. ``ir_label_dataset(cfg)``)."""
    reads = set()
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == CFG:
            reads.add(node.attr)
        elif isinstance(node, ast.Call) and any(isinstance(a, ast.Name) and a.id == CFG for a in node.args):
            func = namespace.get(node.func.id) if isinstance(node.func, ast.Name) else None
            if inspect.isfunction(func) and func.__module__.startswith("rpnet.stages") and func not in seen:
                seen.add(func)
                reads |= config_reads(inspect.getsource(func), vars(inspect.getmodule(func)), seen)
    return reads


@pytest.mark.parametrize("name", list(cli.STAGES))
def test_each_stage_reads_only_the_sections_the_graph_lists(name):
    assert name in GRAPH, f"stage {name} is in cli.STAGES but not in rpnet.pipeline.graph.GRAPH"
    module = importlib.import_module(cli.STAGES[name])
    reads = config_reads(inspect.getsource(module), vars(module), set())
    assert reads, "the source scan found no cfg.* read: the check would pass vacuously"
    unlisted = reads - set(GRAPH[name].sections) - RUNTIME_KEYS
    assert not unlisted, f"{name} reads config sections {sorted(unlisted)} that GRAPH does not list"


def test_the_scan_follows_helpers_into_other_stage_modules():
    from rpnet.stages import train_irn

    # train_irn reads cfg.ir_label only through make_ir_label.ir_label_dataset.
    assert "ir_label" not in {n.attr for n in ast.walk(ast.parse(inspect.getsource(train_irn)))
                              if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == CFG}
    assert "ir_label" in config_reads(inspect.getsource(train_irn), vars(train_irn), set())


def test_upstream_stages_come_first_and_sections_exist():
    order = list(GRAPH)
    sections = set(Config.__dataclass_fields__)
    for name, spec in GRAPH.items():
        assert all(order.index(u) < order.index(name) for u in spec.upstream), name
        assert set(spec.sections) <= sections, f"{name}: {set(spec.sections) - sections}"


def test_a_stage_missing_from_the_graph_depends_on_everything_before_it():
    order = ["train-cam", "make-cam", "new-stage"]
    spec = stage_spec("new-stage", order)
    assert spec == StageSpec(("train-cam", "make-cam"), tuple(Config.__dataclass_fields__))


def test_stages_come_from_cli_stages_live(monkeypatch):
    monkeypatch.setitem(cli.STAGES, "extra-stage", "rpnet.stages.eval_cam")
    assert stage_order()[-1] == "extra-stage"
    assert stage_folder("extra-stage") == "eval_cam"  # the module's STAGE_DIR
    assert stage_folder("make-ir-label") == "make_ir_label"


def test_runtime_keys_name_real_config_keys():
    from rpnet.config import Config, to_dict

    raw = to_dict(Config())
    for key in RUNTIME_KEYS:
        node = raw
        for part in key.split("."):
            assert part in node, f"RUNTIME_KEYS names {key}, which the config does not have"
            node = node[part]
