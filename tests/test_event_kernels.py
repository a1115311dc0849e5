"""Event-driven ops: the Linear on spike inputs and the counter-based Bernoulli spike draws."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from kernel_support import kernels_called
from torch.nn import functional as F

import tracetorch as tt
from tracetorch.data.encoders import rate
from tracetorch.kernels import cpu, dispatch
from tracetorch.kernels.event_linear import MAX_DENSITY, LinearPlan, _EventLinear, explain, linear, linear_plan
from tracetorch.kernels.spike_draws import bernoulli_spikes, draw_seed, hash_uniforms

compiled = pytest.mark.skipif(not cpu.available(), reason="needs the compiled C++ kernels")


def spikes(*shape: int, density: float = 0.15, seed: int = 0) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < density).float()


def grads(fn, x: torch.Tensor, fc: torch.nn.Linear, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().requires_grad_()
    out = fn(x, fc.weight, fc.bias)
    inputs = [x, fc.weight] + ([fc.bias] if fc.bias is not None else [])
    return (out, *torch.autograd.grad(out, inputs, g))


@compiled
@pytest.mark.parametrize(("rows", "inputs", "outputs"), [(2000, 784, 128), (300, 77, 13), (64, 100, 70), (97, 64, 130)])
@pytest.mark.parametrize("bias", [True, False])
def test_event_linear_equals_dense_linear_with_gradients(rows: int, inputs: int, outputs: int, bias: bool) -> None:
    torch.manual_seed(0)
    fc = torch.nn.Linear(inputs, outputs, bias=bias)
    x = spikes(rows, inputs)
    x[3] = 0.0  # a row without spikes
    assert explain(x, fc.weight, fc.bias)[0] == "events"
    assert cpu.load().binary_rows(x, MAX_DENSITY)[0].numel() == rows + 1  # indexed: the event path runs
    g = torch.randn(rows, outputs)
    for got, want in zip(grads(linear, x, fc, g), grads(F.linear, x, fc, g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * (1 + rows / 100))


PLANS = [LinearPlan(forward, weight_grad) for forward in ("events", "dense") for weight_grad in ("events", "dense")]


@compiled
@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"{p.forward}-{p.weight_grad}")
@pytest.mark.parametrize("bias", [True, False])
def test_every_linear_plan_equals_dense_linear_with_gradients(plan: LinearPlan, bias: bool) -> None:
    torch.manual_seed(1)
    fc = torch.nn.Linear(130, 20, bias=bias)
    x, g = spikes(400, 130, density=0.3), torch.randn(400, 20)

    def planned(v: torch.Tensor, weight: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        indptr, indices = cpu.load().binary_rows(v.detach(), MAX_DENSITY)
        return _EventLinear.apply(v, weight, b, indptr, indices, plan)
    for got, want in zip(grads(planned, x, fc, g), grads(F.linear, x, fc, g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@compiled
@pytest.mark.parametrize(("inputs", "outputs", "density", "kernels"), [
    (784, 128, 0.05, {"event_linear_forward", "event_linear_grad_weight"}),  # rate-coded pixels
    (128, 128, 0.47, {"event_linear_forward"}),  # a hidden layer firing half the time: MKL's weight gradient
    (128, 128, 0.7, set()),  # denser than MAX_DENSITY: torch's products
    (128, 10, 0.25, {"event_linear_forward"}),  # ten outputs: MKL's product is the cheaper weight gradient
])
def test_linear_runs_the_kernels_its_plan_picks(inputs: int, outputs: int, density: float, kernels: set[str]) -> None:
    torch.manual_seed(3)
    fc = torch.nn.Linear(inputs, outputs)
    x, g = spikes(2000, inputs, density=density), torch.randn(2000, outputs)
    ones = int(x.sum())
    plan = linear_plan(2000, inputs, outputs, ones)
    assert {k for k, name in (("event_linear_forward", plan.forward), ("event_linear_grad_weight", plan.weight_grad))
            if name == "events"} == kernels
    results: list[torch.Tensor] = []
    called = kernels_called(lambda: results.extend(grads(linear, x, fc, g)))
    assert called - {"binary_rows"} == kernels
    for got, want in zip(results, grads(F.linear, x, fc, g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)


@compiled
def test_event_linear_gradients_do_not_depend_on_the_thread_count() -> None:
    torch.manual_seed(2)
    fc = torch.nn.Linear(300, 40)
    x, g = spikes(500, 300, density=0.2), torch.randn(500, 40)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(grads(linear, x, fc, g))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0][:3], other[:3]))  # output, grad x, grad W


@compiled
def test_binary_rows_is_the_index_of_the_ones() -> None:
    x = spikes(50, 90, density=0.3)
    indptr, indices = cpu.load().binary_rows(x, 1.0)
    rows, cols = x.nonzero().unbind(1)
    assert torch.equal(indices.long(), cols)
    assert torch.equal(indptr, torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(rows, minlength=50).cumsum(0)]))


@compiled
@pytest.mark.parametrize("outputs", [10, 64, 130])
def test_event_weight_gradient_adds_the_rows_in_order(outputs: int) -> None:
    # grad W[:, k] = grad_out[r1] + grad_out[r2] + ... over the rows with x[r, k] = 1, added in increasing r
    x, g = spikes(300, 77, density=0.3), torch.randn(300, outputs)
    indptr, indices = cpu.load().binary_rows(x, 1.0)
    want = torch.zeros(77, outputs)
    for r in range(300):
        want[x[r] == 1] += g[r]
    assert torch.equal(cpu.load().event_linear_grad_weight(indptr, indices, g, 77), want.t())


@compiled
@pytest.mark.parametrize("column", [3, 86, 89])  # in the eight-lane loop, in the last full group, in the tail
@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, float("nan"), float("inf")])
def test_binary_rows_refuses_any_other_value_wherever_it_is(column: int, value: float) -> None:
    x = spikes(40, 90, density=0.3)
    x[17, column] = value
    assert cpu.load().binary_rows(x, 1.0)[0].numel() == 0


@compiled
def test_binary_rows_counts_negative_zero_as_zero() -> None:
    x = spikes(40, 90, density=0.3)
    x[x == 0] = -0.0
    indptr, indices = cpu.load().binary_rows(x, 1.0)
    assert indptr[-1] == int((x == 1).sum()) and torch.equal(indices.long(), x.nonzero()[:, 1])


@compiled
@pytest.mark.parametrize(
    ("value", "density", "why"), [(0.5, 0.1, "a value other than 0/1"), (-1.0, 0.1, "a -1"), (1.0, 0.9, "too dense")]
)
def test_inputs_that_are_not_sparse_spikes_take_the_dense_path(value: float, density: float, why: str) -> None:
    x = spikes(80, 64, density=density)
    x[7, 5] = value
    indptr, indices = cpu.load().binary_rows(x, MAX_DENSITY)
    assert indptr.numel() == 0 and indices.numel() == 0, why
    fc = torch.nn.Linear(64, 9)
    assert torch.equal(linear(x, fc.weight, fc.bias), F.linear(x, fc.weight, fc.bias))


@pytest.mark.parametrize(
    ("x", "weight", "reason"),
    [
        (spikes(100, 64).double(), torch.zeros(3, 64, dtype=torch.float64), "dtype other than float32"),
        (spikes(10, 64), torch.zeros(3, 64), "fewer than 4096 input elements"),
        (spikes(100, 64), torch.zeros(3, 65), "shapes for torch's own checks"),
    ],
)
def test_explain_names_why_the_dense_path_is_taken(x: torch.Tensor, weight: torch.Tensor, reason: str) -> None:
    assert explain(x, weight) == ("dense", reason)


def test_autocast_takes_the_dense_path() -> None:
    x, weight = spikes(100, 64), torch.randn(5, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert explain(x, weight) == ("dense", "autocast (torch picks the precision)")
        assert linear(x, weight).dtype == torch.bfloat16


def test_forced_reference_and_missing_kernel_take_the_dense_path(monkeypatch: pytest.MonkeyPatch) -> None:
    x, weight = spikes(100, 64), torch.randn(5, 64)
    with dispatch.force("reference"):
        assert explain(x, weight) == ("dense", "forced")
    monkeypatch.setattr(cpu, "load", lambda: None)
    assert explain(x, weight) == ("dense", "compiled C++ kernel unavailable")
    assert torch.equal(linear(x, weight), F.linear(x, weight))


def test_dense_path_keeps_torch_error_messages() -> None:
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        linear(spikes(100, 64), torch.zeros(3, 65))


@compiled
def test_sequential_run_on_spikes_equals_steps_with_gradients() -> None:
    torch.manual_seed(1)
    model = tt.Sequential(torch.nn.Linear(40, 32), tt.snn.LIB(32, beta=0.8), torch.nn.Linear(32, 5), tt.snn.LI(5))
    twin = copy.deepcopy(model)
    x = spikes(12, 30, 40, density=0.4)
    assert explain(x.reshape(-1, 40), model[0].weight)[0] == "events"
    out = model.run(x)
    steps = torch.stack([twin(x_t) for x_t in x])
    torch.testing.assert_close(out, steps, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    steps.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=name)


def lowbias32(x: int) -> int:
    """The hash, written independently with Python integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) % 2**32
    x ^= x >> 15
    x = (x * 0x846CA68B) % 2**32
    return x ^ (x >> 16)


def test_hash_uniforms_follow_the_definition() -> None:
    seed = 0x1234_5678_9ABC_DEF
    u = hash_uniforms(50, seed)
    for i in range(50):
        h = lowbias32(lowbias32(i ^ (seed % 2**32)) ^ (i >> 32) ^ (seed >> 32))
        assert u[i].item() == (h >> 8) / 2**24


@compiled
@pytest.mark.parametrize("count", [2, 4095, 4096 * 3 + 17])
def test_compiled_spike_draws_equal_the_reference_bit_for_bit(count: int) -> None:
    p = torch.rand(count)
    p[:1] = 1.0
    p[-1:] = 0.0
    seed = draw_seed(torch.Generator().manual_seed(count))
    fast = bernoulli_spikes(p, 7, seed)
    with dispatch.force("reference"):
        slow = bernoulli_spikes(p, 7, seed)
    assert torch.equal(fast, slow)
    assert bool((fast[:, 0] == 1).all()) and bool((fast[:, -1] == 0).all())


def test_spike_draws_have_the_right_rate_and_no_correlation() -> None:
    p = torch.tensor([0.05, 0.3, 0.5, 0.9])
    s = bernoulli_spikes(p.repeat(1000), 100, seed=3).view(100, 1000, 4)
    rate_hat = s.mean((0, 1))
    sigma = (p * (1 - p) / 100_000).sqrt()
    assert bool(((rate_hat - p).abs() < 5 * sigma).all()), rate_hat
    centered = (s - p).view(100, -1)
    for a, b in ((centered[1:], centered[:-1]), (centered[:, 1:], centered[:, :-1])):  # next step, next element
        corr = (a * b).mean() / (p * (1 - p)).mean()
        assert abs(float(corr)) < 0.01


def test_rate_encoder_is_seeded_by_its_generator() -> None:
    x = torch.rand(4, 6)
    a, b = rate(x, 9, torch.Generator().manual_seed(5)), rate(x, 9, torch.Generator().manual_seed(5))
    c = rate(x, 9, torch.Generator().manual_seed(6))
    assert a.shape == (9, 4, 6) and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(rate(x, 9, torch.Generator().manual_seed(5), gain=0.0), torch.zeros(9, 4, 6))
    assert torch.equal(rate(x.double(), 9, torch.Generator().manual_seed(5)), a.double())


def test_negative_steps_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^bernoulli_spikes: steps must be >= 0, got -1$"):
        bernoulli_spikes(torch.rand(3), -1, 0)



def test_linear_with_hooks_is_called_as_a_module() -> None:
    model = tt.Sequential(torch.nn.Linear(40, 8), tt.snn.LIB(8))
    seen: list[tuple[int, ...]] = []
    model[0].register_forward_hook(lambda _m, inputs, _out: seen.append(tuple(inputs[0].shape)))
    model.run(spikes(10, 30, 40))
    assert seen == [(300, 40)]


@compiled
@pytest.mark.parametrize(
    ("shape", "rounded"),
    [((10, 64, 1024), 4 << 20),  # 2.6 MB of output: rounded up to 2 MiB pages
     ((20, 100, 128), 1 << 20),  # 1.0 MB: to the next power of two
     ((12, 4, 1000), 256 << 10)],  # 192 KB
)
def test_kernel_outputs_reuse_pooled_buffers(shape: tuple[int, ...], rounded: int) -> None:
    layer = tt.snn.LIB(shape[-1], quant_fn=tt.functional.round_ste())
    x = torch.randn(*shape)
    with torch.no_grad():
        first = layer.run(x)
        where, expected = first.data_ptr(), first.clone()
        before = cpu.load().pool_cached_bytes()
        del first
        assert cpu.load().pool_cached_bytes() == before + rounded
        layer.zero_states()
        second = layer.run(x)
    assert second.data_ptr() == where
    assert torch.equal(second, expected)
    del second
    cached = cpu.load().pool_cached_bytes()
    assert cached >= rounded
    assert cpu.release_pool() == cached
    assert cpu.load().pool_cached_bytes() == 0


@compiled
def test_pool_limit_is_set_when_the_kernels_load(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = tt.snn.LIB(1024)
    x = torch.randn(10, 64, 1024)  # 2.6 MB of output: one 4 MiB block each
    cpu.release_pool()
    with torch.no_grad():
        first, second = layer.run(x), layer.run(x)
    del first, second
    assert cpu.load().pool_cached_bytes() >= 8 << 20
    try:
        for mib in (4, 0):
            monkeypatch.setenv("TRACETORCH_CPU_POOL_MB", str(mib))
            cpu.load.cache_clear()
            left = cpu.load().pool_cached_bytes()
            assert (0 < left <= mib << 20) if mib else left == 0  # frees down to the limit, not past it
    finally:
        monkeypatch.delenv("TRACETORCH_CPU_POOL_MB")
        cpu.load.cache_clear()
        cpu.load()
    with torch.no_grad():
        layer.run(x)
    assert cpu.load().pool_cached_bytes() >= 4 << 20
    cpu.release_pool()


@pytest.mark.parametrize(("value", "mib"), [(None, 2048), ("0", 0), (" 64 ", 64), ("9" * 30, 1 << 30)])
def test_pool_limit_setting(monkeypatch: pytest.MonkeyPatch, value: str | None, mib: int) -> None:
    if value is None:
        monkeypatch.delenv("TRACETORCH_CPU_POOL_MB", raising=False)
    else:
        monkeypatch.setenv("TRACETORCH_CPU_POOL_MB", value)
    assert cpu._pool_limit_mib() == mib


@pytest.mark.parametrize("value", ["lots", "-1", "1.5", ""])
def test_bad_pool_setting_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    cpu.load.cache_clear()
    monkeypatch.setenv("TRACETORCH_CPU_POOL_MB", value)
    try:
        with pytest.raises(ValueError, match=r"^TRACETORCH_CPU_POOL_MB must be a whole number of MiB \(0 turns the buffer"
                           rf" pool off\), got '{value}'$"):
            cpu.load()
    finally:
        monkeypatch.delenv("TRACETORCH_CPU_POOL_MB")
        cpu.load.cache_clear()
    assert cpu.available()


@compiled
def test_pool_can_be_turned_off() -> None:
    code = (
        "import torch, tracetorch as tt\n"
        "from tracetorch.kernels import cpu\n"
        "layer = tt.snn.LIB(1024)\n"
        "x = torch.randn(10, 64, 1024)\n"
        "with torch.no_grad():\n"
        "    a = layer.run(x); expected = a.clone(); del a; layer.zero_states(); b = layer.run(x)\n"
        "print(cpu.load().pool_cached_bytes(), torch.equal(b, expected))\n"
    )
    env = {**os.environ, "TRACETORCH_CPU_POOL_MB": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=True)
    assert done.stdout.split() == ["0", "True"]
