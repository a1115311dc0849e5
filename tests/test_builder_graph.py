"""Graph specs: the example graphs build, validate on the meta device, train, round-trip, and step == sequence."""

from __future__ import annotations

import copy
import os
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from tracetorch.cli import validate as validate_cli

import tracetorch as tt
from tracetorch.builder import SpecError, model_to_spec
from tracetorch.builder.build import SpecWarning
from tracetorch.builder.dot import graph_to_dot, write_picture
from tracetorch.builder.summary import summarize_graph
from tracetorch.core.graph import combine

MODELS = Path(__file__).parents[1] / "configs" / "model"
EXAMPLES = [p for p in sorted(MODELS.glob("*.yaml")) if "\nnodes:" in p.read_text()]
SHAPE = (1, 8, 8)  # the digits' sample shape: every example must fit it
STEPS = {"sew_resnet18": 2}


def _build(source, seed: int = 0, **kwargs) -> tt.Graph:
    torch.manual_seed(seed)
    return tt.build_model(source, input_shape=SHAPE, **kwargs)


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_the_example_graphs_exist() -> None:
    assert {p.stem for p in EXAMPLES} >= {"sew_resnet18", "two_branch", "recurrent_graph"}
    assert len((MODELS / "sew_resnet18.yaml").read_text().splitlines()) <= 25  # one screen, blocks included


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_step_mode_equals_sequence_mode(path: Path) -> None:
    """Outputs, final hidden states, BatchNorm statistics and gradients agree."""
    model = _build(path)
    if path.stem == "sew_resnet18":  # at 8x8 its last stage is 1x1: training-mode BatchNorm over 2 values per channel
        model.eval()  # would amplify the fused kernels' float rounding a thousandfold
    stepper = copy.deepcopy(model)
    x = torch.rand(STEPS.get(path.stem, 5), 2, *SHAPE)
    out = model.run(x)
    stepped = torch.stack([stepper(x_t) for x_t in x])
    assert out.shape == (x.shape[0], 2, 10)
    torch.testing.assert_close(out, stepped)
    states, stepped_states = model.save_states(), stepper.save_states()
    assert states.keys() == stepped_states.keys() and states
    for key in states:
        torch.testing.assert_close(states[key], stepped_states[key], msg=key)
    for (name, a), (_, b) in zip(model.named_buffers(), stepper.named_buffers()):
        torch.testing.assert_close(a, b, msg=name)
    (out.pow(2).sum()).backward()
    (stepped.pow(2).sum()).backward()
    grads, stepped_grads = _grads(model), _grads(stepper)
    assert grads.keys() == stepped_grads.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    for key in grads:  # float sums in another order: compared against the gradient's scale
        scale = stepped_grads[key].abs().max().item()
        assert (grads[key] - stepped_grads[key]).abs().max().item() <= 1e-4 * scale + 1e-7, key


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_meta_validation_matches_the_real_model(path: Path) -> None:
    meta = tt.build_model(path, input_shape=SHAPE, device="meta")
    real = _build(path)
    assert all(p.is_meta for p in meta.parameters())
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [(n, p.shape) for n, p in real.named_parameters()]
    assert meta.node_shapes == real.node_shapes and meta.node_shapes[meta.output] == (10,)
    rows = summarize_graph(meta)
    assert sum(r.parameters for r in rows) == sum(p.numel() for p in real.parameters()) + sum(
        b.numel() for n, b in real.named_buffers() if ".raw_" in n)
    assert isinstance(tt.load_spec(path), tt.builder.graph.GraphSpec)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_one_training_step_bptt_and_truncated(path: Path) -> None:
    from tracetorch.data.encoders import rate

    model = _build(path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.rand(4, *SHAPE), torch.tensor([0, 1, 2, 3])
    spikes = rate(x, num_steps=4)
    model.zero_states()
    first = model.run(spikes[:2])
    model.detach_states()  # truncated BPTT: the second half does not reach back into the first
    logits = torch.cat([first, model.run(spikes[2:])]).mean(0)
    loss = nn.functional.cross_entropy(logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "nodes.readout.raw_beta" in changed and len(changed) >= len(before) // 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_model_to_spec_round_trip(path: Path) -> None:
    model = _build(path)
    spec = model_to_spec(model)
    again = _build(spec)
    assert repr(again) == repr(model)
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert model_to_spec(again) == spec  # a fixed point
    document = yaml.safe_load(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    assert model_to_spec(_build(document)) == spec
    x = torch.rand(3, 2, *SHAPE)
    model.eval(), again.eval()
    torch.testing.assert_close(again.run(x), model.run(x), rtol=0, atol=0)


def test_parameter_names_are_stable_and_checkpoints_round_trip(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    model = _build(MODELS / "sew_resnet18.yaml")
    names = list(model.state_dict())
    assert names[:2] == ["nodes.conv.weight", "nodes.bn.weight"]
    assert "nodes.layer2.first.short.weight" in names and "nodes.layer4.second.sn2.raw_threshold" in names
    assert names == list(_build(MODELS / "sew_resnet18.yaml", seed=1).state_dict())
    safetensors.save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    other = _build(MODELS / "sew_resnet18.yaml", seed=1)
    other.load_state_dict(safetensors.load_file(str(tmp_path / "w.safetensors")))
    x = torch.rand(2, 2, *SHAPE)
    model.eval(), other.eval()
    torch.testing.assert_close(other.run(x), model.run(x), rtol=0, atol=0)
    model.save_states_file(tmp_path / "s.safetensors")
    other.load_states_file(tmp_path / "s.safetensors")
    assert other.save_states().keys() == model.save_states().keys()


def test_a_delayed_edge_reads_the_previous_step() -> None:
    """recurrent_graph by hand: feedback(lif2 at t-1) is added to fc1's output at t; zeros at t = 0."""
    model = _build(MODELS / "recurrent_graph.yaml")
    m = {name: copy.deepcopy(model.module(name)) for name in ("flat", "fc1", "lif1", "fc2", "lif2", "feedback", "fc3", "readout")}
    x = torch.rand(6, 3, *SHAPE)
    previous = torch.zeros(3, 64)
    outs = []
    for x_t in x:
        h = m["lif1"](m["fc1"](m["flat"](x_t)) + m["feedback"](previous))
        previous = m["lif2"](m["fc2"](h))
        outs.append(m["readout"](m["fc3"](previous)))
    torch.testing.assert_close(model.run(x), torch.stack(outs))
    torch.testing.assert_close(model.save_states()["delays.lif2.prev"], previous)
    assert model.delay("lif2").prev is not None
    model.zero_states()
    assert model.delay("lif2").prev is None


def test_sew_functions_follow_the_paper() -> None:
    """SEW-ResNet (Fang et al. 2021), eq. 4: ADD a + s, AND a * s, IAND (1 - a) * s."""
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    s = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    assert combine("sew", {"fn": "ADD"}, [a, s], 1).tolist() == [[0, 1, 1, 2]]
    assert combine("sew", {"fn": "AND"}, [a, s], 1).tolist() == [[0, 0, 0, 1]]
    assert combine("sew", {"fn": "IAND"}, [a, s], 1).tolist() == [[0, 1, 0, 0]]
    x = torch.rand(2, 3, 4, 5, 5)
    assert combine("concat", {"dim": 0}, [x, x], 2).shape == (2, 3, 8, 5, 5)
    assert combine("concat", {"dim": -1}, [x, x], 2).shape == (2, 3, 4, 5, 10)


class _SEWBlock(tt.Model):
    """A SEW block written by hand (Fang et al. 2021, fig. 1b)."""

    def __init__(self, cin: int, cout: int, stride: int, connect: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1, self.sn1 = nn.BatchNorm2d(cout), tt.snn.LIB(cout, dim=-3)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2, self.sn2 = nn.BatchNorm2d(cout), tt.snn.LIB(cout, dim=-3)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout),
                                      tt.snn.LIB(cout, dim=-3))
        self.connect = connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x))))))
        s = x if self.down is None else self.down(x)
        return {"ADD": a + s, "AND": a * s, "IAND": (1 - a) * s}[self.connect]


class _SEWNet(tt.Model):
    def __init__(self, connect: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), tt.snn.LIB(4, dim=-3))
        self.blocks = nn.Sequential(_SEWBlock(4, 4, 1, connect), _SEWBlock(4, 8, 2, connect), _SEWBlock(8, 8, 1, connect))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10), tt.snn.LI(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _small_sew(connect: str) -> dict:
    return {"input_shape": list(SHAPE), "include": "blocks/sew.yaml", "output": "readout", "nodes": {
        "conv": {"Conv2d": {"out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False}},
        "bn": {"BatchNorm2d": {}}, "sn": {"LIB": {}},
        "block1": {"Basic": {"channels": 4, "connect": connect}},
        "stage2": {"Stage": {"channels": 8, "connect": connect}},
        "pool": {"AdaptiveAvgPool2d": {"output_size": 1}}, "flat": {"Flatten": {}},
        "fc": {"Linear": {"out_features": 10}}, "readout": {"LI": {}}}}


@pytest.mark.parametrize("connect", ["ADD", "IAND"])
def test_sew_resnet_from_yaml_equals_the_network_written_in_python(connect: str) -> None:
    built = _build(_small_sew(connect))
    hand = _SEWNet(connect)
    theirs, ours = built.state_dict(), hand.state_dict()
    assert [v.shape for v in theirs.values()] == [v.shape for v in ours.values()]
    hand.load_state_dict(dict(zip(ours, theirs.values())))
    x = (torch.rand(4, 2, *SHAPE) < 0.5).float()
    out = built.run(x)
    expected = torch.stack([hand(x_t) for x_t in x])
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    for (name, p), q in zip(built.named_parameters(), hand.parameters()):  # fused kernels vs steps: float rounding
        assert (p.grad - q.grad).abs().max().item() <= 1e-4 * q.grad.abs().max().item() + 1e-7, name


def test_validation_of_a_billion_parameters_allocates_nothing() -> None:
    """Measured: time and resident memory of validating a 1.07e9-parameter spec on the meta device."""
    spec = {"input_shape": [32768], "output": "out", "nodes": {
        "fc": {"Linear": {"out_features": 32768}}, "lif": {"LIB": {}}, "out": {"add": {}, "from": ["lif", "input"]}}}
    tt.build_model({"input_shape": [4], "output": "a", "nodes": {"a": {"Linear": {"out_features": 2}}}}, device="meta")
    rss = _rss()
    start = time.perf_counter()
    model = tt.build_model(spec, device="meta")
    seconds = time.perf_counter() - start
    grown = _rss() - rss
    assert sum(p.numel() for p in model.parameters()) == 32768 * 32768 + 32768 + 3 * 32768
    assert seconds < 5.0, seconds  # about 0.05 s on an idle machine; the bound is generous for loaded CI
    assert grown < 100 * 2**20, grown


def _rss() -> int:
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("resident memory is read from /proc")
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_huge_and_non_integer_sizes_are_clean_errors_or_tables(tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("input_shape: [4]\nnodes:\n  fc: {Linear: {out_features: 4000000000}}\noutput: fc\n")
    assert validate_cli.main([str(path)]) == 0
    assert "parametersandbuffers74.5GB" in "".join(capsys.readouterr().out.split())  # nothing allocated
    assert sum(r.parameters for r in summarize_graph(tt.build_model(path, device="meta"))) == 20_000_000_000
    with pytest.raises(SpecError, match="needs .* for its parameters but this machine has"):
        tt.build_model({"input_shape": [4], "layers": [{"Linear": {"out_features": 400_000_000_000}}]})
    path.write_text("input_shape: [4]\nnodes:\n  fc: {Linear: {out_features: 1.0e+20}}\noutput: fc\n")
    assert validate_cli.main([str(path)]) == 2
    assert "nodes.fc.Linear.out_features: out_features must be an integer, got 1e+20" in capsys.readouterr().err


def test_a_neuron_dim_off_the_channels_is_a_warning(tmp_path: Path, capsys) -> None:
    text = "input_shape: [1, 8, 8]\nlayers:\n  - Conv2d: {out_channels: 4, kernel_size: 3}\n  - SLIB: {dim: -1}\n"
    (tmp_path / "dim.yaml").write_text(text)
    with pytest.warns(SpecWarning, match="SLIB dim -1 makes 6 neurons along an axis of \\[4, 6, 6\\]"):
        model = tt.build_model(tmp_path / "dim.yaml")
    assert model.spec_warnings[0].line == 4
    assert validate_cli.main([str(tmp_path / "dim.yaml")]) == 0
    out = capsys.readouterr().out
    assert "warning" in out and "dim.yaml:4: layers[1].SLIB.dim" in out.replace("\n", "")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)  # the channel dim warns nothing
        tt.build_model({"input_shape": [1, 8, 8], "layers": [{"Conv2d": {"out_channels": 4, "kernel_size": 3}},
                                                              {"SLIB": {"dim": -3}}]})


def test_validate_prints_the_graph_table_and_writes_a_picture(tmp_path: Path, capsys) -> None:
    assert validate_cli.main([str(MODELS / "recurrent_graph.yaml"), "--dot", str(tmp_path), "--input-shape", "1", "8", "8"]) == 0
    out = capsys.readouterr().out
    for text in ("node", "inputs", "lif2@t-1", "delay", "feedback", "13,460", "memory: parameters and buffers 52.6 KB"):
        assert text in out, text
    dot = (tmp_path / "recurrent_graph.dot").read_text()
    assert '"lif2" -> "feedback" [style=dashed, label="t-1"];' in dot and '"readout" -> "output";' in dot
    model = tt.build_model(MODELS / "two_branch.yaml", input_shape=[1, 8, 8], device="meta")
    assert graph_to_dot(model).count("->") == sum(len(n.inputs) for n in model.graph_nodes) + 1
    if __import__("shutil").which("dot"):
        assert (tmp_path / "recurrent_graph.svg").exists()
    assert write_picture(model, tmp_path / "sub" / "two")[0].exists()


def test_validate_names_both_shapes_of_an_add_that_does_not_combine(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("input_shape: [3, 8, 8]\nnodes:\n  a: {Conv2d: {out_channels: 64, kernel_size: 3, padding: 1}}\n"
                    "  b: {Conv2d: {out_channels: 32, kernel_size: 3, padding: 1}, from: input}\n"
                    "  sum: {add: {}, from: [a, b]}\noutput: sum\n")
    assert validate_cli.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5: nodes.sum: add of shapes that differ: a gives [64, 8, 8] (line 3) but b gives [32, 8, 8] (line 4)" \
        in err.replace("\n", "")


def test_a_chain_spec_builds_what_it_builds_today() -> None:
    model = _build(MODELS / "mlp.yaml")
    assert type(model) is tt.Sequential
    assert [type(m).__name__ for m in model] == ["Flatten", "Linear", "LIB", "Linear", "LIB", "Linear", "LI"]


def test_trace_learning_wraps_the_synapses_of_a_graph() -> None:
    """The online trace rule finds Linear/Conv nodes feeding spiking nodes (through pass-through nodes) in graphs too."""
    from tracetorch.online.trace import TraceSynapse, disable_trace_learning, enable_trace_learning

    model = _build(MODELS / "two_branch.yaml")
    plain = copy.deepcopy(model)
    assert enable_trace_learning(model) == ["nodes.conv", "nodes.small", "nodes.large", "nodes.fc"]
    assert isinstance(model.module("small"), TraceSynapse)
    x = torch.rand(3, 2, *SHAPE)
    model.eval(), plain.eval()
    torch.testing.assert_close(model.run(x), plain.run(x))  # same forward values; only the gradients change
    model.run(x).sum().backward()
    assert all(p.grad is not None for p in model.module("small").parameters())
    assert disable_trace_learning(model) == ["nodes.conv", "nodes.small", "nodes.large", "nodes.fc"]
    assert list(model.state_dict()) == list(plain.state_dict())


def test_the_readme_graph_example_builds() -> None:
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"### Graph models.*?```yaml\n(.*?)```", readme, re.S).group(1)
    model = tt.build_model(yaml.safe_load(block), input_shape=SHAPE)
    assert "nodes.layer2.first.conv1.weight" in model.state_dict()
    assert model.run(torch.rand(2, 2, *SHAPE)).shape == (2, 2, 10)


def test_the_json_schema_accepts_the_graph_examples_and_rejects_broken_graphs() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = tt.builder.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path
    assert validator.is_valid({"nodes": {"a": {"SLIB": {"alpha": 0.5}, "from": ["input", {"node": "a", "delay": 1}]}},
                               "output": "a"})
    for broken in ({"nodes": {"a": {"LIB": {"alpha": 0.5}}}, "output": "a"}, {"nodes": {"a": {"LIB": {}}}},
                   {"layers": [{"LIB": {}}], "nodes": {"a": {"LIB": {}}}, "output": "a"},
                   {"nodes": {"a": {"sew": {"fn": "OR"}, "from": ["input", "input"]}}, "output": "a"},
                   {"nodes": {"a": {"add": {}, "from": [{"node": "a", "delay": 2}]}}, "output": "a"}):
        assert not validator.is_valid(broken), broken


def test_output_shape_formulas_equal_running_the_layers() -> None:
    """Validation computes common layers' shapes by formula (no meta kernels); PyTorch running them is the reference."""
    import itertools

    from tracetorch.builder.shapes import _analytic

    checked = 0
    for size, k, s, p, d, ceil in itertools.product([5, 8, 11], [1, 2, 3], [1, 2, 3], [0, 1], [1, 2], [False, True]):
        if p > k // 2:
            continue
        for module in (nn.MaxPool2d(k, s, p, d, ceil_mode=ceil), nn.AvgPool2d(k, s, p, ceil_mode=ceil),
                       nn.Conv2d(2, 3, k, s, p, d), nn.Conv1d(2, 3, k, s, p, d)):
            shape = (2, size) if isinstance(module, nn.Conv1d) else (2, size, size + 1)
            try:
                real = tuple(module(torch.zeros(1, *shape)).shape[1:])
            except RuntimeError:
                real = None
            assert _analytic(module, shape) == real, (module, shape)
            checked += 1
    for module, shape in ((nn.Linear(6, 3), (4, 6)), (nn.AdaptiveAvgPool2d((2, None)), (3, 5, 7)), (nn.LayerNorm(7), (3, 7)),
                          (nn.BatchNorm2d(3).eval(), (3, 4, 4)), (nn.BatchNorm1d(3).eval(), (3,)), (nn.Dropout(), (5,)),
                          (nn.Flatten(), (3, 4, 5)), (nn.Flatten(2), (3, 4, 5)), (nn.Flatten(1, 2), (3, 4, 5))):
        assert _analytic(module, shape) == tuple(module(torch.zeros(2, *shape)).shape[1:])
    assert checked > 300
