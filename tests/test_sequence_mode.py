"""Sequence mode (``layer.run``): equal to T single steps for all 32 layers; fused kernels, paths, fallbacks."""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import subprocess
import sys

import pytest
import torch
from kernel_support import layer_cases, make_layer

import tracetorch as tt
from tracetorch.functional import round_ste
from tracetorch.kernels import cpu, dispatch
from tracetorch.kernels.reference import draw_uniforms, replay_quant
from tracetorch.snn.grammar import layer_names, parse

SHAPES = {-1: (3, 4), -3: (2, 4, 2, 3)}


def step_mode(layer, x_seq, uniforms=None):
    """T calls of ``layer(x_t)``; with ``uniforms`` the stochastic quantizer replays them."""
    original = layer.quant_fn if layer.flags.fires else None
    outs = []
    for t, x_t in enumerate(x_seq.unbind(0)):
        if uniforms is not None:
            object.__setattr__(layer, "quant_fn", replay_quant(original, uniforms[t]))
        outs.append(layer(x_t))
    if uniforms is not None:
        object.__setattr__(layer, "quant_fn", original)
    return torch.stack(outs)


def loss_of(out, layer, weights):
    states = [getattr(layer, n) for n in layer.state_names()]
    return (out * weights).sum() + sum((0.5 + i) * (s**2).sum() for i, s in enumerate(states))


def compare(a, b, x_a, x_b, out_a, out_b, atol=1e-5):
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=1e-4)
    for name in a.state_names():
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=atol, rtol=1e-4, msg=name)
    weights = torch.randn_like(out_a)
    ga = torch.autograd.grad(loss_of(out_a, a, weights), [x_a, *a.parameters()])
    gb = torch.autograd.grad(loss_of(out_b, b, weights), [x_b, *b.parameters()])
    names = ["x"] + [n for n, _ in a.named_parameters()]
    for name, u, v in zip(names, ga, gb):
        torch.testing.assert_close(u, v, atol=10 * atol, rtol=1e-3, msg=name)


@pytest.mark.parametrize("rank", [1, 0])
@pytest.mark.parametrize("dim", [-1, -3])
@pytest.mark.parametrize(("name", "quant"), list(layer_cases()))
def test_sequence_equals_steps(name: str, quant: str, dim: int, rank: int) -> None:
    seq_layer = make_layer(name, dim, rank, quant)
    step_layer = copy.deepcopy(seq_layer)
    x = 1.5 * torch.randn(6, *SHAPES[dim])
    x_seq = x.clone().requires_grad_(True)
    x_step = x.clone().requires_grad_(True)
    # warm start: both layers continue from the same non-zero states
    with torch.no_grad():
        warm = torch.randn(2, *SHAPES[dim])
        torch.manual_seed(7)
        step_mode(step_layer, warm, draw_uniforms(step_layer.flags, step_layer.quant_fn, warm))
        torch.manual_seed(7)
        seq_layer.run(warm)
    torch.manual_seed(3)
    uniforms = draw_uniforms(seq_layer.flags, seq_layer.quant_fn, x)
    torch.manual_seed(3)
    out_seq = seq_layer.run(x_seq)
    out_step = step_mode(step_layer, x_step, uniforms)
    compare(seq_layer, step_layer, x_seq, x_step, out_seq, out_step)


@pytest.mark.parametrize("name", layer_names())
def test_every_layer_takes_the_fused_path_by_default(name: str) -> None:
    layer = make_layer(name, -1, 1, None)
    path, why = dispatch.explain(layer, torch.zeros(2, 3, 4))
    assert path == "cpu", why


def test_initial_state_gradients_flow_through_a_sequence() -> None:
    layer = make_layer("DSRLIT", -1, 1, None)
    layer.run(torch.randn(3, 3, 4))
    layer.detach_states()
    held = {n: getattr(layer, n) for n in layer.state_names()}
    start = {n: v.detach().requires_grad_(True) for n, v in held.items()}
    ref = copy.deepcopy(layer)
    for n, v in start.items():
        layer.set_state(n, v)
        ref.set_state(n, v)
    x = torch.randn(5, 3, 4)
    out = layer.run(x)
    with dispatch.force("reference"):
        out_ref = ref.run(x)
    g = torch.autograd.grad(out.square().sum(), list(start.values()))
    g_ref = torch.autograd.grad(out_ref.square().sum(), list(start.values()))
    for name, a, b in zip(start, g, g_ref):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_two_runs_equal_one_long_run() -> None:
    layer = make_layer("SRLIB", -1, 1, None)
    other = copy.deepcopy(layer)
    x = torch.randn(8, 2, 4)
    first = torch.cat([layer.run(x[:3]), layer.run(x[3:])])
    torch.testing.assert_close(first, other.run(x))
    torch.testing.assert_close(layer.mem, other.mem)


def test_stochastic_quantizer_uses_the_drawn_uniforms_exactly() -> None:
    layer = make_layer("LIT", -1, 1, "probabilistic")
    ref = copy.deepcopy(layer)
    x = torch.randn(20, 8, 4)
    torch.manual_seed(11)
    fused = layer.run(x)
    torch.manual_seed(11)
    with dispatch.force("reference"):
        expected = ref.run(x)
    assert torch.equal(fused != 0, expected != 0)
    assert 0 < (fused != 0).float().mean() < 1


def test_run_rejects_bad_sequences() -> None:
    layer = tt.snn.LIB(4)
    with pytest.raises(ValueError, match=r"expected a sequence \[T, \*input_shape\] with T >= 1, got shape \(4,\)"):
        layer.run(torch.zeros(4))
    with pytest.raises(ValueError, match="with T >= 1, got shape \\(0, 2, 4\\)"):
        layer.run(torch.zeros(0, 2, 4))
    with pytest.raises(ValueError, match="has 5 at dim=-1, expected num_neurons=4"):
        layer.run(torch.zeros(3, 2, 5))
    with pytest.raises(TypeError, match="expected a torch.Tensor of shape \\[T, ...\\], got list"):
        layer.run([[0.0] * 4])


def test_integer_spike_sequences_are_accepted() -> None:
    layer = tt.snn.LIB(4)
    out = layer.run(torch.ones(3, 2, 4, dtype=torch.int64))
    assert out.dtype == torch.get_default_dtype() and out.shape == (3, 2, 4)


# ---- fused kernels vs reference, path selection, fallbacks ----------------------------------

cuda = pytest.mark.skipif(not dispatch.triton_available(), reason="needs CUDA and Triton")


def run_both(layer, x, path):
    ref = copy.deepcopy(layer)
    x_a = x.clone().requires_grad_(True)
    x_b = x.clone().requires_grad_(True)
    torch.manual_seed(5)
    with dispatch.force(path):
        assert dispatch.select_path(layer, x) == path
        out = layer.run(x_a)
    torch.manual_seed(5)
    with dispatch.force("reference"):
        out_ref = ref.run(x_b)
    return ref, x_a, x_b, out, out_ref


@pytest.mark.parametrize(("dim", "shape"), [(-3, (9, 5, 37, 5, 3)), (-1, (9, 75, 37))])
@pytest.mark.parametrize("quant", ["identity", "round_unit", "stochastic_round"])
@pytest.mark.parametrize("name", layer_names())
def test_compiled_kernel_matches_reference_over_several_blocks(name: str, quant: str, dim: int,
                                                               shape: tuple[int, ...]) -> None:
    # 2775 elements per step: several blocks of 1024 and a partial one. dim=-3: 15 elements a neuron, blocks
    # start inside a neuron's run; dim=-1: consecutive neurons, the 37 wrap around inside every block (the two
    # ways the kernel adds a block's parameter gradients). The identity quantizer and round_ste with step 1 run
    # the kernel's own instantiations, the others the blended one.
    fires = tt.snn.grammar.parse(name).fires
    if quant != "identity" and not fires:
        pytest.skip("only firing layers quantize")
    layer = make_layer(name, dim, 1, quant, num_neurons=37)
    x = 2.0 * torch.randn(*shape)
    ref, x_a, x_b, out, out_ref = run_both(layer, x, "cpu")
    compare(layer, ref, x_a, x_b, out, out_ref)


@pytest.mark.parametrize(("name", "quant"), [("LIB", "round_unit"), ("DSRLIB", "round_unit"), ("SLIT", "identity")])
def test_outputs_past_the_streaming_size_match_the_reference(name: str, quant: str) -> None:
    # 8 x 524,291 floats (16.8 MB, past STREAM_BYTES = 16 MiB in neuron_kernels.h): out, the saved rows and
    # grad x go out through non-temporal stores; 524,291 is odd, so rows start off the 32-byte grid
    if not cpu.available():
        pytest.skip("needs the compiled kernel")
    layer = make_layer(name, -1, 1, quant, num_neurons=524_291)
    x = 2.0 * torch.randn(8, 1, 524_291)
    assert x.numel() * 4 >= 16 << 20
    ref, x_a, x_b, out, out_ref = run_both(layer, x, "cpu")
    compare(layer, ref, x_a, x_b, out, out_ref)


@pytest.mark.parametrize("dual", [False, True])
def test_binary_spikes_near_the_threshold_match_the_reference(dual: bool) -> None:
    # LIB with round_ste() fires from the sign of z = h - threshold where |z| > 1e-5 and computes
    # round(sigmoid(4 z)) in runs of 64 elements holding a z near 0 (or NaN): both give the reference's spikes
    if not cpu.available():
        pytest.skip("needs the compiled kernel")
    torch.manual_seed(0)
    layer = tt.snn.get_layer_class("DLIB" if dual else "LIB")(3, dim=-3, threshold=1e-3, quant_fn=round_ste())
    x = 4.0 * torch.randn(1, 2, 3, 8, 16)  # 768 elements: 12 runs of 64
    threshold = layer.param_value("threshold").detach()[0]  # small, so that x = threshold + 1e-8 is not the threshold
    tiny = torch.tensor([0.0, 2.0**-20, -(2.0**-20), 1e-8, 2e-5, -2e-5, 1e-3, -1e-3, 1e30, -1e30, float("nan")])
    x.view(-1)[64 * torch.arange(11)] = threshold + tiny  # one a run: z at, near and past 0
    x.view(-1)[[700, 701]] = threshold  # and z = 0 beside other values in the last run
    ref, x_a, x_b, out, out_ref = run_both(layer, x, "cpu")
    # z = 1e-8: sigmoid(4 z) rounds to 1/2, and round(1/2) = 0
    assert out.view(-1)[64 * torch.arange(5)].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert out.view(-1)[[700, 701]].tolist() == [0.0, 0.0]
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("quant", ["identity", "round_unit", "stochastic_round"])
@pytest.mark.parametrize("name", layer_names())
def test_frozen_parameters_skip_their_gradients_and_keep_the_input_gradient(
        name: str, quant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the backward kernel without parameter gradients gives the same input gradient, bit for bit
    if not cpu.available():
        pytest.skip("needs the compiled kernel")
    if quant != "identity" and not parse(name).fires:
        pytest.skip("only firing layers quantize")
    learning = make_layer(name, -3, 1, quant, num_neurons=37)
    frozen = copy.deepcopy(learning).requires_grad_(False)
    flags = []
    backward = cpu.CpuBackend.backward

    def spy(self, *args, **kwargs):
        flags.append(args[-1])
        return backward(self, *args, **kwargs)

    monkeypatch.setattr(cpu.CpuBackend, "backward", spy)
    x = 2.0 * torch.randn(9, 5, 37, 5, 3)
    weights = torch.randn_like(x)
    grads = []
    for layer in (learning, frozen):
        x_in = x.clone().requires_grad_(True)
        torch.manual_seed(5)
        (layer.run(x_in) * weights).sum().backward()
        grads.append(x_in.grad)
    assert flags == [True, False]
    assert torch.equal(grads[0], grads[1])
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is not None for p in learning.parameters())


def test_fallback_when_the_compiled_kernel_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "load", lambda: None)
    layer = make_layer("DSLIB", -1, 1, None)
    x = torch.randn(5, 3, 4)
    assert dispatch.explain(layer, x) == ("reference", "compiled C++ kernel unavailable")
    expected = copy.deepcopy(layer)
    out = layer.run(x)
    steps = torch.stack([expected(x_t) for x_t in x])
    assert torch.equal(out, steps)
    assert torch.equal(layer.pos_mem, expected.pos_mem)


def test_missing_compiler_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    cpu.load.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING, logger="tracetorch.kernels"):
            mp.setenv("CXX", "no-such-compiler-tt")
            assert cpu.load() is None
            assert cpu.load() is None
            assert dispatch.select_path(tt.snn.LIB(4), torch.zeros(2, 1, 4)) == "reference"
        assert [r.getMessage() for r in caplog.records] == [
            "traceTorch: no C++ compiler (no-such-compiler-tt) found; neuron sequences, event-driven Linear and spike draws"
            " use the slower plain PyTorch paths"
        ]
    finally:
        cpu.load.cache_clear()
    assert cpu.available()


@pytest.mark.parametrize(
    ("kwargs", "dtype", "reason"),
    [
        ({"spike_fn": torch.sigmoid}, torch.float32, "custom spike_fn sigmoid"),
        ({"quant_fn": torch.nn.Hardtanh()}, torch.float32, "custom quant_fn Hardtanh"),
        ({}, torch.float64, "dtype torch.float64 (the fused kernels take float32)"),
    ],
)
def test_unsupported_configurations_run_the_reference(kwargs: dict, dtype: torch.dtype, reason: str) -> None:
    layer = tt.snn.LIT(4, **kwargs).to(dtype)
    x = torch.randn(4, 2, 4, dtype=dtype)
    assert dispatch.explain(layer, x) == ("reference", reason)
    expected = copy.deepcopy(layer)
    torch.testing.assert_close(layer.run(x), torch.stack([expected(x_t) for x_t in x]))


def test_force_rejects_unknown_paths() -> None:
    with pytest.raises(ValueError, match="unknown kernel path 'gpu'; choose one of triton, cpu, reference"):
        with dispatch.force("gpu"):
            pass


def test_environment_variable_pins_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACETORCH_KERNELS", "reference")
    assert dispatch.explain(tt.snn.LIB(4), torch.zeros(2, 1, 4)) == ("reference", "forced")


def test_no_grad_sequence_equals_grad_sequence() -> None:
    layer = make_layer("SRLITS", -1, 1, None)
    other = copy.deepcopy(layer)
    x = torch.randn(6, 3, 4)
    with torch.no_grad():
        quiet = layer.run(x)
    assert not quiet.requires_grad
    torch.testing.assert_close(quiet, other.run(x).detach())


def test_sequential_model_uses_the_fused_path() -> None:
    net = tt.Sequential(torch.nn.Linear(6, 4), tt.snn.LIB(4), torch.nn.Linear(4, 3), tt.snn.LI(3))
    stepped = copy.deepcopy(net)
    x = torch.randn(7, 5, 6)
    out = net.run(x)
    expected = torch.stack([stepped(x_t) for x_t in x])
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    for (name, a), b in zip(net.named_parameters(), stepped.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", layer_names())
@pytest.mark.parametrize("quant", ["identity", "probabilistic"])
def test_triton_kernel_matches_reference(name: str, quant: str) -> None:
    fires = tt.snn.grammar.parse(name).fires
    layer = make_layer(name, -3, 1, quant if fires else None).cuda()
    x = 2.0 * torch.randn(7, 3, 4, 5, 2, device="cuda")
    ref, x_a, x_b, out, out_ref = run_both(layer, x, "triton")
    compare(layer, ref, x_a, x_b, out, out_ref)


@cuda
@pytest.mark.cuda
def test_cuda_input_selects_triton() -> None:
    layer = tt.snn.LIB(4).cuda()
    assert dispatch.select_path(layer, torch.zeros(2, 1, 4, device="cuda")) == "triton"


TRITON_CHECK = """
import copy, torch, tracetorch as tt
from tracetorch.kernels.fused import fused_run
from tracetorch.kernels.reference import draw_uniforms, quant_kind, run_reference
from tracetorch.kernels.triton_kernels import TritonBackend
F = tt.functional
for name, quant in (("DSRLITS", F.probabilistic_ste()), ("SLIEMA", None), ("RLIB", F.round_ste(0.5)),
                    ("DLIT", F.stochastic_round_ste())):
    torch.manual_seed(0)
    layer = tt.snn.get_layer_class(name)(5, dim=-2, **({"quant_fn": quant} if quant is not None else {}))
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.4 * torch.randn_like(p))
    layer.run(torch.randn(2, 3, 5, 2))
    layer.detach_states()
    ref = copy.deepcopy(layer)
    x = 2 * torch.randn(6, 3, 5, 2)
    u = draw_uniforms(layer.flags, layer.quant_fn, x)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, states = fused_run(layer.neuron_run(xa), xa, u, TritonBackend(), quant_kind(layer.quant_fn))
    out_ref, states_ref = run_reference(ref.neuron_run(xb), xb, u)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-4)
    w = torch.randn_like(out)
    loss = (out * w).sum() + sum((v ** 2).sum() for v in states.values())
    loss_ref = (out_ref * w).sum() + sum((states_ref[k] ** 2).sum() for k in states)
    for a, b in zip(torch.autograd.grad(loss, [xa, *layer.parameters()]),
                    torch.autograd.grad(loss_ref, [xb, *ref.parameters()])):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
print("triton-interpreter-ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")
def test_triton_kernels_match_reference_in_the_interpreter() -> None:
    """The Triton kernels' logic, run on CPU by Triton's interpreter (GPU-less CI checks it here)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "triton-interpreter-ok" in proc.stdout


@pytest.mark.parametrize("loss", ["mean_over_time", "sum", "final_state_only"])
def test_gradients_for_broadcast_and_missing_output_gradients(loss: str) -> None:
    """The kernel takes one gradient row when it is the same at every step, and none when unused."""
    layer = make_layer("DSRLIT", -1, 1, None)
    ref = copy.deepcopy(layer)
    x = torch.randn(7, 3, 4)
    x_a, x_b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_a = layer.run(x_a)
    with dispatch.force("reference"):
        out_b = ref.run(x_b)

    def objective(out, lay):
        if loss == "mean_over_time":
            return out.mean(0).square().sum()
        if loss == "sum":
            return out.sum()
        return lay.pos_mem.square().sum() + lay.neg_mem.sum()

    ga = torch.autograd.grad(objective(out_a, layer), [x_a, *layer.parameters()])
    gb = torch.autograd.grad(objective(out_b, ref), [x_b, *ref.parameters()])
    assert gb[0].abs().sum() > 0
    for (name, _), a, b in zip([("x", None), *layer.named_parameters()], ga, gb):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3, msg=name)
