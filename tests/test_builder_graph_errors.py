"""Broken graph specs: every problem named with its location, YAML line and reason; a fuzz never escapes SpecError."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracetorch as tt
from tracetorch.builder import SpecError

S4 = "input_shape: [4]\n"
IMG = "input_shape: [3, 8, 8]\n"
BLOCK = S4 + "blocks:\n  B:\n    params: {width: ~}\n    nodes:\n      fc: {Linear: {out_features: $width}}\n"
CORPUS: list[tuple[str, str, list[tuple[str, int | None, str]]]] = [
    ("cycle", S4 + "nodes:\n  a: {Linear: {out_features: 4}, from: c}\n  b: {LIB: {}}\n  c: {Linear: {out_features: 4}}\n"
     "output: c\n",
     [("nodes.a", 3, "cycle without a delay: a -> b -> c -> a; make one of its edges delayed "
                     "({node: c, delay: 1} in the from of a)")]),
    ("self-loop", S4 + "nodes:\n  a: {add: {}, from: [input, a]}\noutput: a\n",
     [("nodes.a", 3, "cycle without a delay: a -> a; make one of its edges delayed ({node: a, delay: 1} in the from of a)")]),
    ("unknown-input", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\n  b: {add: {}, from: [a, aa2]}\noutput: b\n",
     [("nodes.b.from", 4, "unknown input 'aa2'; inputs can be input, a, b")]),
    ("unknown-input-close", S4 + "nodes:\n  conv1: {Linear: {out_features: 4}}\n  b: {LIB: {}, from: conv2}\noutput: b\n",
     [("nodes.b.from", 4, "unknown input 'conv2'; did you mean 'conv1'?")]),
    ("add-shapes", IMG + "nodes:\n  a: {Conv2d: {out_channels: 64, kernel_size: 3, padding: 1}}\n"
     "  b: {Conv2d: {out_channels: 32, kernel_size: 3, padding: 1}, from: input}\n  s: {add: {}, from: [a, b]}\noutput: s\n",
     [("nodes.s", 5, "add of shapes that differ: a gives [64, 8, 8] (line 3) but b gives [32, 8, 8] (line 4)")]),
    ("concat-shapes", IMG + "nodes:\n  a: {Conv2d: {out_channels: 4, kernel_size: 3}}\n"
     "  b: {concat: {dim: 0}, from: [a, input]}\noutput: b\n",
     [("nodes.b", 4, "concat along dim 0: a gives [4, 6, 6] (line 3) and input gives [3, 8, 8]; "
                     "sizes must match except at dim 0")]),
    ("dangling", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\n  b: {LIB: {}}\n  c: {Linear: {out_features: 2}, from: a}\n"
     "output: c\n",
     [("nodes.b", 4, "node 'b' is dangling: no node takes its output and it is not the output")]),
    ("no-output", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\n",
     [("<spec>", 1, "a graph needs output: the name of the node whose output the model returns")]),
    ("bad-output", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\noutput: b\n",
     [("output", 4, "output 'b' is not a node; nodes: a")]),
    ("layer-two-inputs", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\n  b: {LIB: {}, from: [a, input]}\noutput: b\n",
     [("nodes.b.from", 4, "a layer takes one input, got 2: combine them first (add, mul, concat, sew)")]),
    ("add-one-input", S4 + "nodes:\n  a: {add: {}}\noutput: a\n",
     [("nodes.a.from", 3, "add combines two or more inputs, got 1: list them in from")]),
    ("kind-typo", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\n  b: {ad: {}, from: [a, input]}\noutput: b\n",
     [("nodes.b", 4, "unknown layer, combine op or block 'ad'; did you mean 'add'?")]),
    ("layer-typo", S4 + "nodes:\n  a: {SDLIB: {}}\noutput: a\n",
     [("nodes.a", 3, "unknown layer 'SDLIB': prefixes go in the order D, S, R; did you mean 'DSLIB'?")]),
    ("layer-argument", S4 + "nodes:\n  a: {LIB: {alpha: 0.5}}\noutput: a\n",
     [("nodes.a.LIB.alpha", 3, "LIB has no synaptic trace; SLIB has alpha")]),
    ("in-features", S4 + "nodes:\n  a: {Linear: {in_features: 5, out_features: 4}}\noutput: a\n",
     [("nodes.a.Linear.in_features", 3, "Linear in_features is 5 but its input has 4 features (input shape [4])")]),
    ("sew-fn", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\n  b: {sew: {fn: OR}, from: [a, input]}\noutput: b\n",
     [("nodes.b.sew.fn", 4, "fn must be ADD, AND, IAND, got 'OR'")]),
    ("sew-three", S4 + "nodes:\n  a: {sew: {}, from: [input, input, input]}\noutput: a\n",
     [("nodes.a.from", 3, "sew takes two inputs [A, S] (the block's spikes, the shortcut), got 3")]),
    ("add-option", S4 + "nodes:\n  a: {add: {dim: 1}, from: [input, input]}\noutput: a\n",
     [("nodes.a.add.dim", 3, "add has no option 'dim'; it takes none (write {})")]),
    ("delay-2", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\n  b: {add: {}, from: [a, {node: b, delay: 2}]}\noutput: b\n",
     [("nodes.b.from", 4, "delay must be 0 or 1 (the previous step), got 2")]),
    ("chain-and-graph", S4 + "layers:\n  - LIB: {}\nnodes:\n  a: {Linear: {out_features: 4}}\noutput: a\n",
     [("layers", 2, "a spec has either layers (a chain) or nodes (a graph), not both")]),
    ("top-key", S4 + "nodes:\n  a: {Linear: {out_features: 4}}\noutput: a\nblock: {}\n",
     [("block", 5, "unknown key 'block'; did you mean 'blocks'?")]),
    ("input-name", S4 + "nodes:\n  input: {Linear: {out_features: 4}}\noutput: input\n",
     [("nodes.input", 3, "'input' names the graph's input; choose another node name")]),
    ("two-kinds", S4 + "nodes:\n  a: {Linear: {out_features: 4}, LIB: {}}\noutput: a\n",
     [("nodes.a", 3, "a node has one layer, combine op or block, got 'Linear', 'LIB'; indent the arguments under 'Linear'")]),
    ("block-missing-param", BLOCK + "nodes:\n  a: {B: {}}\noutput: a\n", [("nodes.a.B", 8, "block B needs width")]),
    ("block-unknown-param", BLOCK + "nodes:\n  a: {B: {width: 3, widht: 4}}\noutput: a\n",
     [("nodes.a.B.widht", 8, "block B has no parameter 'widht'; did you mean 'width'?")]),
    ("block-unknown-reference", S4 + "blocks:\n  B:\n    params: {width: 3}\n    nodes:\n"
     "      fc: {Linear: {out_features: $with}}\nnodes:\n  a: {B: {}}\noutput: a\n",
     [("blocks.B.nodes.fc.Linear.out_features", 6, "unknown parameter '$with'; did you mean 'width'?")]),
    ("parameter-outside-block", S4 + "nodes:\n  a: {Linear: {out_features: $width}}\noutput: a\n",
     [("nodes.a.Linear.out_features", 3, "'$width' outside a block: parameters exist only in blocks")]),
    ("block-parameter-value", BLOCK + "nodes:\n  a: {B: {width: four}}\noutput: a\n",
     [("blocks.B.nodes.fc.Linear.out_features", 6, "in a.fc: out_features must be an integer, got 'four'")]),
    ("block-recursion", S4 + "blocks:\n  B:\n    nodes:\n      inner: {B: {}}\nnodes:\n  a: {B: {}}\noutput: a\n",
     [("blocks.B.nodes.inner", 5, "block 'B' uses itself: B -> B")]),
    ("block-named-like-a-layer", S4 + "blocks:\n  LIB:\n    nodes:\n      fc: {Linear: {out_features: 4}}\n"
     "nodes:\n  a: {Linear: {out_features: 4}}\noutput: a\n",
     [("blocks.LIB", 3, "block 'LIB' has the name of a layer")]),
    ("block-two-inputs", BLOCK + "nodes:\n  a: {B: {width: 4}, from: [input, input]}\noutput: a\n",
     [("nodes.a.from", 8, "block B takes one input, got 2")]),
    ("delay-without-shape", "nodes:\n  acc: {add: {}, from: [input, {node: acc, delay: 1}]}\noutput: acc\n",
     [("nodes.acc", 2, "node 'acc' is read through a delay, so its output shape must be known: give the model an input_shape")]),
    ("huge-float", S4 + "nodes:\n  a: {Linear: {out_features: 1.0e+20}}\noutput: a\n",
     [("nodes.a.Linear.out_features", 3, "out_features must be an integer, got 1e+20")]),
]


def _issues(source) -> list[tuple[str, int | None, str]]:
    with pytest.raises(SpecError) as info:
        tt.build_model(source, device="meta")
    return [(i.location, i.line, i.message) for i in info.value.errors]


@pytest.mark.parametrize(("name", "text", "expected"), CORPUS, ids=[c[0] for c in CORPUS])
def test_broken_graph_specs_get_exact_messages(tmp_path: Path, name: str, text: str, expected) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    assert _issues(path) == expected
    as_dict = _issues(yaml.safe_load(text))
    unlined = [(loc, re.sub(r" \(line \d+\)", "", message)) for loc, _, message in expected]  # dicts have no lines
    assert [(loc, message) for loc, _, message in as_dict] == unlined


def test_every_problem_of_a_graph_is_reported_at_once(tmp_path: Path) -> None:
    text = (S4 + "nodes:\n  a: {Linear: {out_features: four}}\n  b: {LIB: {alpha: 0.5}}\n  c: {add: {}, from: [b, nope]}\n"
            "output: c\n")
    (tmp_path / "m.yaml").write_text(text)
    assert [(loc, line) for loc, line, _ in _issues(tmp_path / "m.yaml")] == [
        ("nodes.a.Linear.out_features", 3), ("nodes.b.LIB.alpha", 4), ("nodes.c.from", 5)]


def test_include_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("include: b.yaml\nblocks:\n  A:\n    nodes:\n      fc: {Linear: {out_features: 4}}\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    (tmp_path / "top.yaml").write_text(S4 + "include: a.yaml\nnodes:\n  x: {A: {}}\noutput: x\n")
    assert _issues(tmp_path / "top.yaml") == [("b.yaml: include", 1, "include cycle: a.yaml -> b.yaml -> a.yaml")]
    (tmp_path / "self.yaml").write_text(S4 + "include: self.yaml\nnodes:\n  x: {Linear: {out_features: 4}}\noutput: x\n")
    assert _issues(tmp_path / "self.yaml") == [("include", 2, "include cycle: self.yaml -> self.yaml")]
    (tmp_path / "missing.yaml").write_text(S4 + "include: [nothere.yaml]\nnodes:\n  x: {Linear: {out_features: 4}}\noutput: x\n")
    assert _issues(tmp_path / "missing.yaml") == [
        ("include[0]", 2, f"include 'nothere.yaml' ({tmp_path / 'nothere.yaml'}): cannot read the file: "
                          f"No such file or directory")]
    (tmp_path / "wrong.yaml").write_text("nodes: {}\nblocks:\n  C:\n    nodes:\n      fc: {Linear: {out_features: x}}\n")
    (tmp_path / "user.yaml").write_text(S4 + "include: wrong.yaml\nnodes:\n  x: {C: {}}\noutput: x\n")
    assert _issues(tmp_path / "user.yaml") == [
        ("wrong.yaml: nodes", 1, "an included file holds only blocks and include, not 'nodes'"),
        ("wrong.yaml: blocks.C.nodes.fc.Linear.out_features", 5, "in x.fc: out_features must be an integer, got 'x'")]
    (tmp_path / "wrong.yaml").write_text("blocks:\n  C:\n    nodes:\n      fc: {Linear: {out_features: x}}\n")
    assert _issues(tmp_path / "user.yaml") == [
        ("wrong.yaml: blocks.C.nodes.fc.Linear.out_features", 4, "in x.fc: out_features must be an integer, got 'x'")]


def test_a_file_included_twice_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text("blocks:\n  D:\n    nodes:\n      fc: {Linear: {out_features: 4}}\n")
    (tmp_path / "b.yaml").write_text("include: d.yaml\n")
    (tmp_path / "c.yaml").write_text("include: [d.yaml]\n")
    (tmp_path / "top.yaml").write_text(S4 + "include: [b.yaml, c.yaml]\nnodes:\n  x: {D: {}}\noutput: x\n")
    assert list(tt.build_model(tmp_path / "top.yaml").state_dict()) == ["nodes.x.fc.weight", "nodes.x.fc.bias"]


def test_a_delayed_loop_builds_and_a_shapeless_one_is_named() -> None:
    model = tt.build_model({"input_shape": [3], "output": "acc", "nodes": {
        "acc": {"add": {}, "from": ["input", {"node": "acc", "delay": 1}]}}})
    x = torch.ones(4, 2, 3)
    torch.testing.assert_close(model.run(x)[:, 0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))  # a running sum
    assert _issues({"input_shape": [3], "output": "b", "nodes": {
        "a": {"concat": {}, "from": ["input", {"node": "b", "delay": 1}]}, "b": {"Linear": {"out_features": 2}}}}) == [
        ("nodes.a", None, "cannot infer the input shape of a, b: they wait on each other through a delay; give the sizes, "
                          "or read the delayed node after a layer whose output shape is known")]


# ---- fuzz ------------------------------------------------------------------------------------

NODE_NAMES = ["a", "b", "c", "d"]
KINDS = ["Linear", "LIB", "SLIB", "add", "mul", "concat", "sew", "Flatten", "B", "Lin", 3]
edge = st.one_of(st.sampled_from([*NODE_NAMES, "input", "zz"]),
                 st.fixed_dictionaries({"node": st.sampled_from(NODE_NAMES), "delay": st.sampled_from([0, 1, 2, "x"])}))
args = st.one_of(st.none(), st.just({}), st.fixed_dictionaries({}, optional={
    "out_features": st.one_of(st.integers(-1, 5), st.just("$width"), st.just("$nope")),
    "dim": st.integers(-2, 1), "fn": st.sampled_from(["ADD", "IAND", "OR"]), "width": st.integers(0, 4)}))
node = st.builds(lambda kind, a, frm: {kind: a} if frm is None else {kind: a, "from": frm},
                 st.sampled_from(KINDS), args, st.one_of(st.none(), edge, st.lists(edge, max_size=3)))
graphs = st.fixed_dictionaries(
    {"nodes": st.dictionaries(st.sampled_from(NODE_NAMES), node, min_size=1, max_size=4)},
    optional={"output": st.sampled_from([*NODE_NAMES, "input"]), "input_shape": st.sampled_from([[4], [2, 3], [0], "x"]),
              "blocks": st.just({"B": {"params": {"width": 2}, "nodes": {"fc": {"Linear": {"out_features": "$width"}},
                                                                         "sn": {"LIB": {}}}}}),
              "include": st.sampled_from(["nothere.yaml", ["blocks/sew.yaml"], 3])},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs)
def test_random_graphs_build_or_raise_spec_error(document) -> None:
    """Whatever the document, SpecError or a model whose sequence mode equals its step mode."""
    try:
        model = tt.build_model(document)
    except SpecError as err:
        assert err.errors and all(issue.message for issue in err.errors)
        return
    assert isinstance(model, tt.Graph)
    if model.input_shape is None:
        return
    stepper = copy.deepcopy(model)
    x = torch.rand(3, 2, *model.input_shape)
    torch.testing.assert_close(model.run(x), torch.stack([stepper(x_t) for x_t in x]))
    assert model.save_states().keys() == stepper.save_states().keys()


@st.composite
def plausible_graphs(draw):
    """Valid-looking graphs on [4] inputs: layers keep the shape, combines mix earlier (or delayed) nodes."""
    count = draw(st.integers(1, 6))
    names = [f"n{i}" for i in range(count)]
    nodes: dict = {}
    for i, name in enumerate(names):
        earlier = ["input", *names[:i]]
        kind = draw(st.sampled_from(["Linear", "LIB", "SLIB", "RLIT", "add", "mul", "sew"]))
        pick = st.one_of(st.sampled_from(earlier), st.builds(lambda n: {"node": n, "delay": 1}, st.sampled_from(names)))
        if kind in ("add", "mul", "sew"):
            nodes[name] = {kind: {"fn": draw(st.sampled_from(["ADD", "AND", "IAND"]))} if kind == "sew" else {},
                           "from": draw(st.lists(pick, min_size=2, max_size=2 if kind == "sew" else 3))}
        else:
            nodes[name] = {kind: {"out_features": 4} if kind == "Linear" else {}, "from": [draw(pick)]}
    used = {e if isinstance(e, str) else e["node"] for n in nodes.values() for e in n["from"]}
    sinks = [n for n in names if n not in used or n == names[-1]]
    if len(sinks) > 1:
        nodes["out"] = {"add": {}, "from": sinks}
    return {"input_shape": [4], "nodes": nodes, "output": "out" if len(sinks) > 1 else sinks[0]}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible_graphs())
def test_plausible_graphs_run_the_same_in_step_and_sequence_mode(document) -> None:
    test_random_graphs_build_or_raise_spec_error.hypothesis.inner_test(document)
