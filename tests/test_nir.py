"""NIR export/import (tracetorch.nir): the mapping checked against NIR's equations, exact round trips, refusals, files."""

from __future__ import annotations

import pathlib
import warnings

import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")
pytest.importorskip("h5py")

import numpy as np  # noqa: E402

import tracetorch as tt  # noqa: E402
from tracetorch.nir import (  # noqa: E402
    GraphModel,
    NIRExportError,
    NIRFileError,
    NIRImportError,
    NIRResetWarning,
    check_exportable,
    from_nir,
    load_nir_model,
    read,
    to_nir,
    write,
)
from tracetorch.snn.grammar import layer_names, param_specs, parse  # noqa: E402

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "model"
EXACT = ["LI", "LIEMA", "SLI", "SLIEMA", "LIB", "SLIB", "RLIB", "SRLIB"]
N, STEPS, DT = 5, 50, 1e-4


def _example(name: str) -> tt.Sequential:
    """An example model file built for MNIST-shaped input (the files leave input_shape to the data)."""
    spec = tt.load_spec(CONFIGS / f"{name}.yaml").model_dump()
    spec["input_shape"] = [1, 28, 28]
    return tt.build_model(spec)


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch):
    monkeypatch.setenv("TRACETORCH_KERNELS", "reference")
    warnings.simplefilter("ignore", NIRResetWarning)


def _layer(name: str, seed: int = 0, binary: bool = True, rank: int = 1, **extra) -> tt.Layer:
    """A layer with random per-neuron parameters (rank 1) or shared ones (rank 0); binary spikes by default."""
    g = torch.Generator().manual_seed(seed)
    def u(lo: float, hi: float):
        value = torch.rand(N if rank else 1, generator=g) * (hi - lo) + lo
        return value if rank else float(value)

    kwargs: dict = {}
    for spec in param_specs(parse(name)):
        base = spec.name.removeprefix("pos_").removeprefix("neg_")
        kwargs[f"{spec.name}_rank"] = rank
        kwargs[spec.name] = {"alpha": u(0.1, 0.9), "beta": u(0.5, 0.95), "gamma": u(0.1, 0.9), "rec_weight": u(-1, 1),
                             "threshold": u(0.5, 1.5), "bias": u(-0.2, 0.2), "scale": u(0.5, 2)}[base]
    if parse(name).fires and binary:
        kwargs["quant_fn"] = tt.functional.round_ste()
    kwargs.update(extra)
    return tt.snn.LAYERS[name](N, **kwargs)


def _net(layer: tt.Layer, inputs: int = 4) -> tt.Sequential:
    torch.manual_seed(1)
    return tt.Sequential(nn.Linear(inputs, N), layer, nn.Linear(N, 3))


def _assert_same_steps(a: tt.Model, b: tt.Model, x: torch.Tensor, exact: bool = True, same_layers: bool = True) -> None:
    """Both models stepped over x: equal outputs at every step and equal final states, layer by layer.

    ``same_layers=False`` (a recurrent layer imported as a generic graph: neuron + trace + feedback edge):
    the membranes of the two neuron layers are compared instead.
    """
    a.zero_states()
    b.zero_states()
    with torch.no_grad():
        for t, x_t in enumerate(x):
            ya, yb = a(x_t), b(x_t)
            if exact:
                assert torch.equal(ya, yb), f"step {t}: max diff {(ya - yb).abs().max()}"
            else:
                torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5, msg=f"step {t}")
    neurons = lambda m: [layer for layer in m.layers().values() if type(layer).__name__ != "Feedback"]  # noqa: E731
    la, lb = neurons(a), neurons(b)
    if not same_layers:
        assert torch.allclose(la[0].mem, lb[0].mem, atol=1e-5)
        return
    assert [type(layer).__name__ for layer in la] == [type(layer).__name__ for layer in lb]
    for layer_a, layer_b in zip(la, lb):
        for (name, sa), (_, sb) in zip(layer_a.states(), layer_b.states()):
            assert torch.equal(sa, sb) if exact else torch.allclose(sa, sb, atol=1e-5), f"{type(layer_a).__name__}.{name}"


def _strip(graph):
    """Drop traceTorch's tags: what another simulator sees (the reset metadata stays)."""
    for node in graph.nodes.values():
        node.metadata.pop("tracetorch", None)
        if isinstance(node, nir.NIRGraph):
            _strip(node)
    return graph


# the mapping, checked against NIR's own ODEs -------------------------------------------------------------------------


def _euler(node, x: np.ndarray, dt: float) -> np.ndarray:
    """NIR's LI/CubaLI/LIF/CubaLIF equations (the nodes' docstrings), forward Euler, subtractive reset by reset_amount."""
    cuba = isinstance(node, (nir.CubaLI, nir.CubaLIF))
    tau = node.tau_mem if cuba else node.tau
    i = np.zeros(x.shape[1:])
    v = np.zeros(x.shape[1:])
    out = []
    for x_t in x:
        current = x_t
        if cuba:
            i = i + dt / node.tau_syn * (-i + node.w_in * x_t)
            current = i  # the new current drives the membrane in the same step
        v = v + dt / tau * (node.v_leak - v + node.r * current)
        if isinstance(node, (nir.LIF, nir.CubaLIF)):
            z = (v > node.v_threshold).astype(float)
            v = v - z * node.metadata["reset_amount"]
            out.append(z)
        else:
            out.append(v)
    return np.stack(out)


@pytest.mark.parametrize("name", ["LI", "LIEMA", "SLI", "SLIEMA", "LIB", "SLIB"])
def test_node_parameters_follow_the_layer_equations(name):
    layer = _layer(name, bias=torch.zeros(N)) if parse(name).fires else _layer(name)
    node = to_nir(tt.Sequential(layer), input_shape=(N,)).nodes["0_" + name.lower()]
    beta = layer.beta.detach().double().numpy()
    expected = {"LI": nir.LI, "LIEMA": nir.LI, "SLI": nir.CubaLI, "SLIEMA": nir.CubaLI, "LIB": nir.LIF, "SLIB": nir.CubaLIF}
    assert type(node) is expected[name]
    tau = node.tau_mem if parse(name).synaptic else node.tau
    np.testing.assert_allclose(tau, DT / (1 - beta), rtol=1e-12)
    np.testing.assert_allclose(node.r, 1.0 if parse(name).ema else 1 / (1 - beta), rtol=1e-12)
    assert np.all(node.v_leak == 0)
    if parse(name).synaptic:
        np.testing.assert_allclose(node.tau_syn, DT / (1 - layer.alpha.detach().double().numpy()), rtol=1e-12)
        assert np.all(node.w_in == 1)
    if parse(name).fires:
        np.testing.assert_allclose(node.v_threshold, layer.threshold.detach().double().numpy(), rtol=1e-12)
        assert node.metadata["reset"] == "subtract" and np.all(node.v_reset == 0)


@pytest.mark.parametrize("name", ["LI", "LIEMA", "SLI", "SLIEMA", "LIB", "SLIB"])
def test_nir_ode_reproduces_the_layer(name):
    """Euler steps of NIR's equations on the exported node give the layer's outputs (signs, gains, same-step synapse)."""
    layer = _layer(name, seed=3)
    node = to_nir(tt.Sequential(layer), input_shape=(N,)).nodes["0_" + name.lower()]
    x = torch.rand(STEPS, 2, N, generator=torch.Generator().manual_seed(4)) * 1.5 - 0.2
    with torch.no_grad():
        expected = torch.stack([layer(x_t) for x_t in x]).double().numpy()
    got = _euler(node, x.double().numpy(), DT)
    if parse(name).fires:
        assert expected.sum() > 10 and np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_bias_moves_the_threshold_and_not_the_reset():
    layer = _layer("LIB", bias=torch.full((N,), 0.25), threshold=torch.full((N,), 1.0))
    node = to_nir(tt.Sequential(layer), input_shape=(N,)).nodes["0_lib"]
    np.testing.assert_allclose(node.v_threshold, 0.75, rtol=1e-6)
    np.testing.assert_allclose(node.metadata["reset_amount"], 1.0, rtol=1e-6)


def test_recurrent_layers_are_subgraphs():
    rlib = _layer("RLIB")
    sub = to_nir(tt.Sequential(rlib), input_shape=(N,)).nodes["0_rlib"]
    assert isinstance(sub, nir.NIRGraph)
    assert {k: type(v).__name__ for k, v in sub.nodes.items()} == {
        "input": "Input", "neuron": "LIF", "rec": "Linear", "output": "Output", "trace": "LI"}
    assert sorted(sub.edges) == sorted([("input", "neuron"), ("neuron", "trace"), ("trace", "rec"), ("rec", "neuron"),
                                        ("neuron", "output")])
    np.testing.assert_allclose(sub.nodes["rec"].weight, np.diag(rlib.rec_weight.detach().double().numpy()), rtol=1e-7)
    np.testing.assert_allclose(sub.nodes["trace"].tau, DT / (1 - rlib.gamma.detach().double().numpy()), rtol=1e-12)
    with torch.no_grad():
        rlib.raw_gamma.fill_(-200.0)  # gamma == 0.0 exactly: the 4-node form snnTorch's importer expects
    sub = to_nir(tt.Sequential(rlib), input_shape=(N,)).nodes["0_rlib"]
    assert sorted(sub.nodes) == ["input", "neuron", "output", "rec"]
    srlib = to_nir(tt.Sequential(_layer("SRLIB")), input_shape=(N,)).nodes["0_srlib"]
    assert ("input", "synapse") in srlib.edges and ("synapse", "neuron") in srlib.edges  # the recurrence skips the synapse


# round trips ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 0])
@pytest.mark.parametrize("name", EXACT)
def test_round_trip_through_a_file_is_exact(name, rank, tmp_path):
    net = _net(_layer(name, seed=7, rank=rank))
    path = write(to_nir(net), tmp_path / "net.nir")
    back = from_nir(path)
    _assert_same_steps(net, back, torch.rand(STEPS, 3, 4) * 2)
    x = torch.rand(STEPS, 2, 4) * 2
    net.zero_states()
    back.zero_states()
    assert torch.equal(net.run(x), back.run(x))


@pytest.mark.parametrize("name", EXACT)
def test_untagged_graphs_map_by_the_equations(name):
    """What another tool would write (no traceTorch tag): same spikes, outputs equal to float rounding."""
    net = _net(_layer(name, seed=11))
    back = from_nir(_strip(to_nir(net)))
    _assert_same_steps(net, back, torch.rand(STEPS, 3, 4) * 2, exact=parse(name).fires or name in ("LI", "SLI", "LIEMA"),
                       same_layers=not parse(name).recurrent)


def test_learnability_rank_and_compiled_layers_survive(tmp_path):
    layer = _layer("SLIB", rank=0, learn_beta=False)
    with torch.no_grad():
        layer.raw_alpha.requires_grad_(False)
    net = _net(layer).TTcompile()
    back = from_nir(write(to_nir(net), tmp_path / "n.nir"))
    rebuilt = [m for m in back.layers().values()][0]
    assert rebuilt.param_info("beta").rank == 0 and not rebuilt.param_info("beta").learn
    assert not rebuilt.raw_alpha.requires_grad and rebuilt.raw_threshold.requires_grad
    _assert_same_steps(net, back, torch.rand(STEPS, 2, 4) * 2)


def test_convolutional_chain_round_trips(tmp_path):
    torch.manual_seed(0)
    q = tt.functional.round_ste()
    net = tt.Sequential(nn.Conv2d(1, 4, 3, padding=1), tt.snn.LIB(4, dim=-3, quant_fn=q), nn.AvgPool2d(2),
                        nn.Conv2d(4, 4, 3, stride=2, bias=False), tt.snn.SLIB(4, dim=-3, quant_fn=q),
                        nn.AvgPool2d(1, divisor_override=1), nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.1), tt.snn.LI(3))
    net.eval()
    graph = to_nir(net, input_shape=(1, 8, 8))
    assert [type(graph.nodes[k]).__name__ for k in graph.nodes][1:-1] == [
        "Conv2d", "LIF", "AvgPool2d", "Conv2d", "CubaLIF", "SumPool2d", "Flatten", "Affine", "LI"]
    back = from_nir(write(graph, tmp_path / "c.nir"))
    _assert_same_steps(net, back, torch.rand(20, 2, 1, 8, 8) * 3)
    _assert_same_steps(net, from_nir(_strip(to_nir(net, input_shape=(1, 8, 8)))), torch.rand(20, 2, 1, 8, 8) * 3)


def test_conv1d_chain_round_trips_and_export_leaves_states_alone(tmp_path):
    torch.manual_seed(0)
    net = tt.Sequential(nn.Conv1d(2, 4, 3, padding=1), tt.snn.SLIB(4, dim=-2, quant_fn=tt.functional.round_ste()),
                        nn.Flatten(), nn.Linear(24, 3), tt.snn.LIEMA(3))
    x = torch.rand(20, 2, 2, 6) * 3
    net.run(x)  # states now hold an autograd graph
    held = {k: v for k, v in net.save_states().items()}
    graph = to_nir(net, input_shape=(2, 6))
    assert all(torch.equal(v, net.save_states()[k]) for k, v in held.items())
    assert [type(n).__name__ for n in graph.nodes.values()][1:-1] == ["Conv1d", "CubaLIF", "Flatten", "Affine", "LI"]
    _assert_same_steps(net, from_nir(write(graph, tmp_path / "c1.nir")), x)


def test_batchnorm_is_folded_into_the_weights_before_it():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(N)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    net = tt.Sequential(nn.Linear(4, N), bn, tt.snn.LI(N)).eval()
    graph = to_nir(net)
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Affine", "LI", "Output"]
    _assert_same_steps(net, from_nir(graph), torch.rand(STEPS, 3, 4), exact=False)


@pytest.mark.parametrize("name", layer_names())
def test_approximate_export_rebuilds_every_layer_exactly(name, tmp_path):
    """All 32 layers with their default graded output: written as the nearest NIR node, re-imported exactly."""
    net = _net(_layer(name, seed=5, binary=False))
    graph = to_nir(net, approximate=True)
    back = from_nir(write(graph, tmp_path / "a.nir"))
    _assert_same_steps(net, back, torch.rand(STEPS, 3, 4) * 2 - 0.5)


@pytest.mark.parametrize("spec", ["mlp", "recurrent", "lits"])
def test_example_model_files_round_trip(spec, tmp_path):
    net = _example(spec)
    graph = to_nir(net, approximate=True)
    back = from_nir(write(graph, tmp_path / f"{spec}.nir"))
    _assert_same_steps(net, back, torch.rand(STEPS, 2, 1, 28, 28))


def test_example_conv_model_is_refused_for_its_maxpool():
    with pytest.raises(NIRExportError) as err:
        to_nir(_example("conv"), approximate=True)
    assert str(err.value) == ("cannot export to NIR (2 layers):\n"
                              "  2 (MaxPool2d): NIR has no MaxPool2d node. Nearest exportable: AvgPool2d.\n"
                              "  5 (MaxPool2d): NIR has no MaxPool2d node. Nearest exportable: AvgPool2d.")


def test_edited_approximate_node_imports_what_the_node_says():
    net = _net(_layer("LIB", binary=False))
    graph = to_nir(net, approximate=True)
    graph.nodes["1_lib"].v_threshold = graph.nodes["1_lib"].v_threshold + 0.5
    with pytest.warns(UserWarning, match="edited after export"):
        back = from_nir(graph)
    layer = list(back.layers().values())[0]
    assert isinstance(layer.quant_fn, tt.functional.RoundSTE)  # what NIR says: binary spikes


# refusals ------------------------------------------------------------------------------------------------------------

APPROX = " (to_nir(..., approximate=True) writes that instead, tagged so that from_nir rebuilds this layer exactly.)"
GRADED = ("graded output: quant_fn is the identity, so the layer outputs spike_fn(mem - threshold + bias), a value in "
          "(0, 1), not spikes; NIR LIF neurons emit binary spikes")
REFUSED = {
    "DLI": ("dual (D) layers keep a positive and a negative membrane with their own decays; NIR has no such neuron", "LI"),
    "DSRLIB": ("dual (D) layers keep a positive and a negative membrane with their own decays; NIR has no such neuron",
               "SRLIB"),
    "LIT": ("LIT emits ternary events (+1/-1); NIR neurons emit 0/1 spikes", "LIB with quant_fn=round_ste()"),
    "SRLITS": ("LITS emits ternary events (+1/-1, scaled); NIR neurons emit 0/1 spikes", "SRLIB with quant_fn=round_ste()"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_families_name_the_layer_reason_and_alternative(name):
    with pytest.raises(NIRExportError) as err:
        to_nir(_net(_layer(name)))
    reason, alternative = REFUSED[name]
    expected = f"cannot export to NIR (1 layer):\n  1 ({name}): {reason}. Nearest exportable: {alternative}.{APPROX}"
    assert str(err.value) == expected


@pytest.mark.parametrize(("quant", "reason"), [
    (nn.Identity(), GRADED),
    (tt.functional.stochastic_round_ste(), "stochastic quantizer (stochastic_round_ste): its events are random draws; "
                                           "NIR neurons are deterministic"),
    (tt.functional.probabilistic_ste(), "stochastic quantizer (probabilistic_ste): its events are random draws; "
                                        "NIR neurons are deterministic"),
    (tt.functional.round_ste(0.5), "round_ste(step_size=0.5) emits events of size 0.5; NIR spikes are 0/1"),
])
def test_refused_outputs_give_their_exact_message(quant, reason):
    with pytest.raises(NIRExportError) as err:
        to_nir(_net(_layer("SLIB", quant_fn=quant)))
    assert str(err.value) == (f"cannot export to NIR (1 layer):\n  1 (SLIB): {reason}. "
                              f"Nearest exportable: SLIB with quant_fn=round_ste().{APPROX}")


def test_refusals_without_an_approximation():
    custom = _layer("LIB", spike_fn=torch.sigmoid)
    with pytest.raises(NIRExportError, match=r"1 \(LIB\): a custom spike_fn: the firing condition is no longer "
                                             r"mem > threshold - bias. Nearest exportable: LIB with the default "
                                             r"spike_fn \(sigmoid4x\).$"):
        to_nir(_net(custom), approximate=True)
    net = tt.Sequential(nn.Linear(4, N), nn.ReLU(), nn.MaxPool1d(1), tt.snn.LI(N))
    with pytest.raises(NIRExportError) as err:
        to_nir(net, approximate=True)
    assert str(err.value).splitlines()[1:] == [
        "  1 (ReLU): NIR has no ReLU node. Nearest exportable: a firing layer such as LIB with quant_fn=round_ste().",
        "  2 (MaxPool1d): NIR has no MaxPool1d node. Nearest exportable: AvgPool2d."]
    conv = tt.Sequential(nn.Conv2d(1, N, 1), _layer("RLIB", dim=-3))
    with pytest.raises(NIRExportError, match=r"1 \(RLIB\): a recurrent layer on input of shape \[5, 2, 2\]"):
        to_nir(conv, input_shape=(1, 2, 2))
    with pytest.raises(NIRExportError, match="BatchNorm right after a Linear/Conv"):
        to_nir(tt.Sequential(nn.BatchNorm1d(4), tt.snn.LI(4)), input_shape=(4,))
    class Custom(tt.Model):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(4, N), _layer("LIB")

        def forward(self, x):
            return self.lif(self.fc(x))

    with pytest.raises(NIRExportError, match="Custom wires its modules in forward"):
        to_nir(Custom(), input_shape=(4,))
    assert sorted(to_nir(_layer("LIB"), input_shape=(N,)).nodes) == ["0_lib", "input", "output"]
    with pytest.raises(NIRExportError, match="needs input_shape"):
        to_nir(tt.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_check_exportable_lists_a_verdict_per_layer():
    net = _example("recurrent")
    verdicts = {(path, layer): verdict for path, layer, verdict, _ in check_exportable(net)}
    assert verdicts == {("0", "Flatten"): "exact", ("1", "Linear"): "exact", ("2", "RLIB"): "approximate",
                        ("3", "Linear"): "exact", ("4", "SRLIT"): "approximate", ("5", "Linear"): "exact",
                        ("6", "SLI"): "exact"}


def test_export_warns_about_the_reset_mode():
    warnings.simplefilter("default", NIRResetWarning)
    with pytest.warns(NIRResetWarning, match="a simulator that honours only v_reset gives different spikes"):
        to_nir(_net(_layer("LIB")))


# graphs: branches and recurrent edges --------------------------------------------------------------------------------


def _branching_graph():
    rng = np.random.default_rng(0)
    w = lambda o, i: rng.uniform(-0.5, 1.0, (o, i)).astype(np.float32)  # noqa: E731
    beta = np.full(3, 0.8)
    lif = nir.LIF(tau=DT / (1 - beta), r=1 / (1 - beta), v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3))
    nodes = {"in": nir.Input(input_type=np.array([4])), "a": nir.Linear(weight=w(3, 4)), "b": nir.Affine(weight=w(3, 4),
             bias=np.zeros(3, np.float32)), "lif": lif, "rec": nir.Linear(weight=w(3, 3)), "li": nir.LI(
             tau=np.full(3, DT / 0.1), r=np.ones(3), v_leak=np.zeros(3)), "out": nir.Output(output_type=np.array([3]))}
    edges = [("in", "a"), ("in", "b"), ("a", "lif"), ("b", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "li"),
             ("a", "li"), ("li", "out")]
    return nir.NIRGraph(nodes=nodes, edges=edges), nodes


def test_branches_sum_and_recurrent_edges_delay_one_step():
    graph, n = _branching_graph()
    with pytest.warns(NIRResetWarning, match="reset to v_reset"):
        model = from_nir(graph)
    assert isinstance(model, GraphModel) and model.back_edges == [("rec", "lif")]
    x = torch.rand(STEPS, 2, 4)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    mem, li, spk = torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3)
    expected = []
    for x_t in x:  # the graph by hand: the LIF gets a + b + rec(previous spikes); the LI gets the LIF's spikes + a
        a, b = x_t @ t(n["a"].weight).T, x_t @ t(n["b"].weight).T
        mem = 0.8 * mem + a + b + spk @ t(n["rec"].weight).T
        spk = (mem > 1).float()
        mem = mem - spk
        li = 0.9 * li + 0.1 * (spk + a)
        expected.append(li)
    with torch.no_grad():
        torch.testing.assert_close(model.run(x), torch.stack(expected))
        states = model.save_states()
    assert "feedback.rec__lif.value" in states
    again = from_nir(to_nir(model))  # an imported graph exports again, edges and all
    _assert_same_steps(model, again, x)


def test_graph_errors_name_the_node():
    graph, nodes = _branching_graph()
    graph.nodes["extra"] = nir.IF(r=np.ones(3), v_threshold=np.ones(3))
    with pytest.raises(NIRImportError, match=r"graph.extra \(IF\): cannot import: a neuron without leak"):
        from_nir(graph)
    graph, nodes = _branching_graph()
    nodes["li"].tau = np.full(3, DT / 2)
    with pytest.raises(NIRImportError, match=r"graph.li: tau=5e-05 with dt=0.0001 gives a decay"):
        from_nir(graph)
    with pytest.raises(NIRImportError, match="varies across the positions"):
        from_nir(nir.NIRGraph.from_list(nir.LI(tau=np.array([[1e-3, 2e-3]]), r=np.ones((1, 2)), v_leak=np.zeros((1, 2)))))


def test_generic_nodes_get_gain_and_leak_in_front():
    """An LIF with r=1 and v_leak != 0 (NIR's own form): the (1-beta) gain and the constant drive are kept."""
    beta = np.array([0.9, 0.7])
    lif = nir.LIF(tau=DT / (1 - beta), r=np.ones(2), v_leak=np.array([0.5, -0.2]), v_threshold=np.array([0.3, 0.4]),
                  v_reset=np.zeros(2), metadata={"reset": "subtract"})
    model = from_nir(nir.NIRGraph.from_list(lif))
    x = torch.rand(STEPS, 3, 2) * 4
    got = model.run(x)
    v, out = torch.zeros(3, 2), []
    b = torch.tensor(beta, dtype=torch.float32)
    for x_t in x:
        v = b * v + (1 - b) * (torch.tensor([0.5, -0.2]) + x_t)
        s = (v > torch.tensor([0.3, 0.4])).float()
        v = v - s * torch.tensor([0.3, 0.4])
        out.append(s)
    assert torch.equal(got, torch.stack(out))


@pytest.mark.parametrize("node", [
    nir.LI(tau=np.full(2, DT / 0.2), r=np.ones(2), v_leak=np.array([0.3, -0.1])),
    nir.LI(tau=np.full(2, DT / 0.3), r=np.array([2.0, 0.5]), v_leak=np.array([0.1, 0.0])),
    nir.CubaLI(tau_syn=np.full(2, DT / 0.4), tau_mem=np.full(2, DT / 0.2), r=np.array([1.0, 3.0]), v_leak=np.zeros(2),
               w_in=np.array([2.0, 0.5])),
    nir.CubaLIF(tau_syn=np.full(2, DT / 0.4), tau_mem=np.full(2, DT / 0.2), r=np.full(2, 5.0), v_leak=np.zeros(2),
                v_threshold=np.array([0.5, 0.8]), w_in=np.array([2.0, 1.0]),
                metadata={"reset": "subtract", "reset_amount": np.array([0.5, 0.8])}),
], ids=["LI-leak", "LI-gain", "CubaLI", "CubaLIF"])
def test_foreign_neurons_follow_nir_equations_and_export_again(node):
    """Nodes as other tools write them (any r, w_in, v_leak): imported, and exported again, they step NIR's ODE."""
    model = from_nir(nir.NIRGraph.from_list(node))
    x = torch.rand(STEPS, 3, 2, generator=torch.Generator().manual_seed(9)) * 2
    expected = torch.as_tensor(_euler(node, x.double().numpy(), DT), dtype=torch.float32)
    torch.testing.assert_close(model.run(x), expected, rtol=1e-5, atol=1e-5)
    again = from_nir(to_nir(model))
    torch.testing.assert_close(again.run(x), expected, rtol=1e-5, atol=1e-5)


# files ---------------------------------------------------------------------------------------------------------------


def _marker_pickle(marker: pathlib.Path) -> bytes:
    import pickle

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    return pickle.dumps(Payload())


def test_bad_files_give_one_error_naming_the_file(tmp_path):
    good = write(to_nir(_net(_layer("LIB"))), tmp_path / "good.nir")
    data = good.read_bytes()
    marker = tmp_path / "pwned"
    cases = {"missing.nir": None, "text.nir": b"hello", "truncated.nir": data[: len(data) // 2],
             "pickle.nir": _marker_pickle(marker), "empty.nir": b""}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(NIRFileError, match=f"^{path}: "):
            from_nir(path)
    import h5py

    with h5py.File(tmp_path / "nonode.nir", "w") as f:
        f.create_dataset("version", data="1.0")
    with pytest.raises(NIRFileError, match=r"nonode.nir: malformed NIR graph \(missing entry: .*'node'"):
        read(tmp_path / "nonode.nir")
    with h5py.File(tmp_path / "link.nir", "w") as f:
        f["node"] = h5py.ExternalLink(str(good), "/node")
    with pytest.raises(NIRFileError, match="holds a link"):
        read(tmp_path / "link.nir")
    assert not marker.exists()


def test_load_nir_model_checks_the_dataset(tmp_path):
    path = write(to_nir(_net(_layer("LIB"))), tmp_path / "m.nir")
    assert isinstance(load_nir_model(path, input_shape=[4], num_classes=3, name="nir"), GraphModel)
    with pytest.raises(NIRImportError, match=r"the graph takes inputs of shape \[4\] but the dataset gives \[1, 28, 28\]"):
        load_nir_model(path, input_shape=[1, 28, 28])
    with pytest.raises(NIRFileError, match="model.path=FILE.nir"):
        load_nir_model(None)
