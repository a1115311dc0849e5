"""NIR interop with the peers' own code: snnTorch (export_to_nir, import_from_nir) and Norse (from_nir).

Needs the ``test-interop`` extra (snnTorch, Norse); each test skips cleanly without its library.

Reset modes are chosen to match traceTorch's subtraction: snnTorch ``reset_mechanism="subtract"``
with ``reset_delay=False``, Norse ``reset_subtract``. snnTorch's ``reset_delay=False`` also subtracts
a threshold when the membrane it stored after the last reset is still above threshold, which an
immediate subtraction never does; the input currents here stay below ``(2 - beta) * threshold`` so
that never happens (then both are ``mem <- beta*mem + x - spike*threshold``).
"""

from __future__ import annotations

import warnings

import pytest
import torch

nir = pytest.importorskip("nir")
pytest.importorskip("h5py")

import numpy as np  # noqa: E402

import tracetorch as tt  # noqa: E402
from tracetorch.nir import NIRResetWarning, from_nir, to_nir  # noqa: E402

STEPS, N = 50, 5


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TRACETORCH_KERNELS", "reference")
    warnings.simplefilter("ignore", NIRResetWarning)


def _linear(seed: int) -> torch.nn.Linear:
    """Small positive-leaning weights: currents of at most about 1.2 for inputs in [0, 1] (see the module docstring)."""
    torch.manual_seed(seed)
    layer = torch.nn.Linear(6, N)
    with torch.no_grad():
        layer.weight.uniform_(-0.05, 0.18)
        layer.bias.uniform_(-0.1, 0.1)
    return layer


def _inputs(seed: int) -> torch.Tensor:
    return torch.rand(STEPS, 3, 6, generator=torch.Generator().manual_seed(seed))


def _step(module, x: torch.Tensor) -> torch.Tensor:
    """Step a peer's module over x (stateful modules keep their state; nirtorch executors return (out, state))."""
    out, state = [], None
    with torch.no_grad():
        for x_t in x:
            y = module(x_t) if state is None else module(x_t, state)
            if isinstance(y, tuple):
                y, state = y
            out.append(y)
    return torch.stack(out)


def _snntorch_net(kind: str):
    snn = pytest.importorskip("snntorch")
    full = lambda v: torch.full((N,), v)  # noqa: E731  snnTorch's exporter needs per-neuron tensors
    kw = {"init_hidden": True, "reset_mechanism": "subtract", "reset_delay": False}
    neuron = {"Leaky": lambda: snn.Leaky(beta=full(0.8), threshold=full(1.0), **kw),
              "Synaptic": lambda: snn.Synaptic(alpha=full(0.6), beta=full(0.8), threshold=full(1.0), **kw),
              "RLeaky": lambda: snn.RLeaky(beta=0.8, all_to_all=False, V=torch.linspace(-0.5, 0.5, N), **kw)}[kind]()
    return torch.nn.Sequential(_linear(1), neuron)


@pytest.mark.parametrize("kind", ["Leaky", "Synaptic", "RLeaky"])
def test_snntorch_export_imports_with_the_same_spikes(kind):
    pytest.importorskip("snntorch")
    import snntorch.utils
    from snntorch.export_nir import export_to_nir

    net = _snntorch_net(kind)
    graph = export_to_nir(net, torch.zeros(1, 6), ignore_dims=[0])
    model = from_nir(graph)
    x = _inputs(2)
    snntorch.utils.reset(net)
    expected = _step(net, x)
    got = model.run(x)
    assert expected.sum() > 10, "the test must see spikes"
    assert torch.equal(got, expected)
    model.zero_states()
    again = from_nir(to_nir(model))  # and the imported network exports again (gains folded back into r / w_in)
    assert torch.equal(again.run(x), expected)


def _tt_net(kind: str) -> tt.Sequential:
    q = tt.functional.round_ste()
    if kind == "LIB":
        neuron = tt.snn.LIB(N, beta=0.8, quant_fn=q)
    elif kind == "SLIB":
        neuron = tt.snn.SLIB(N, alpha=0.6, beta=0.8, quant_fn=q)
    else:
        neuron = tt.snn.RLIB(N, beta=0.8, rec_weight=torch.linspace(-0.5, 0.5, N), quant_fn=q)
        with torch.no_grad():
            neuron.raw_gamma.fill_(-200.0)  # gamma == 0: snnTorch's RLeaky (4-node subgraph)
    return tt.Sequential(_linear(3), neuron)


@pytest.mark.parametrize("kind", ["LIB", "SLIB", "RLIB"])
def test_tracetorch_graphs_run_in_snntorch(kind):
    snn = pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    net = _tt_net(kind)
    graph = to_nir(net)
    imported = import_from_nir(graph)
    neurons = [m for m in imported.modules() if isinstance(m, snn.SpikingNeuron)]
    assert len(neurons) == 1
    neurons[0].reset_mechanism = "subtract"  # snnTorch's importer picks reset-to-zero (NIR's v_reset)
    x = _inputs(4)
    expected = net.run(x)
    assert expected.sum() > 10
    assert torch.equal(_step(imported, x), expected)


@pytest.mark.parametrize("kind", ["LIB", "SLIB"])
def test_tracetorch_graphs_run_in_norse(kind):
    norse = pytest.importorskip("norse.torch")
    from norse.torch.functional.reset import reset_subtract

    net = _tt_net(kind)
    graph = to_nir(net)
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):  # Norse's LIF ignores r (it warns): move r into the Affine in front, same graph
            affine = graph.nodes["0_linear"]
            affine.weight, affine.bias, node.r = affine.weight * node.r[:, None], affine.bias * node.r, np.ones_like(node.r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imported = norse.from_nir(graph, reset_method=reset_subtract, dt=graph.metadata["dt"])
    for module in imported.modules():  # Norse's importer passes reset_method to CubaLIF only
        if hasattr(module, "p") and hasattr(module.p, "reset_method"):
            module.p = module.p._replace(reset_method=reset_subtract)
    x = _inputs(5)
    expected = net.run(x)
    assert expected.sum() > 10
    assert torch.equal(_step(imported, x), expected)
