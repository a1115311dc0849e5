"""A neuron layer followed by ``nn.MaxPool2d``: the C++ kernel pools each block of planes as it computes.

``layer.run_pooled(x, pool)`` (what ``tt.Sequential.run`` calls for the pair) must equal the
layer's own ``run`` followed by the pooling folded over time: outputs, final states and the
input gradient bit for bit; parameter gradients up to float reassociation (the kernel's blocks
become whole planes, so the per-chunk sums group differently).
"""

from __future__ import annotations

import copy

import pytest
import torch
from kernel_support import kernels_called, layer_cases, make_layer
from torch import nn

import tracetorch as tt
from tracetorch.kernels import cpu, dispatch
from tracetorch.kernels.sequence import fold_time, run_chain

compiled = pytest.mark.skipif(not cpu.available(), reason="needs the compiled kernel")

def fused_and_plain(layer: nn.Module, pool: nn.MaxPool2d, x: torch.Tensor, seed: int = 3):
    """(out, states, grads) of ``run_pooled`` and of ``run`` + pooling, from the same states and random draws."""
    results = []
    for fused, twin in ((True, layer), (False, copy.deepcopy(layer))):  # copied before either runs
        x_in = x.clone().requires_grad_(True)
        torch.manual_seed(seed)
        out = twin.run_pooled(x_in, pool) if fused else fold_time(pool, twin.run(x_in))
        states = [getattr(twin, n) for n in twin.state_names()]
        torch.manual_seed(seed + 1)
        weights = torch.randn_like(out)
        loss = (out * weights).sum() + sum((0.5 + i) * (s**2).sum() for i, s in enumerate(states))
        grads = torch.autograd.grad(loss, [x_in, *twin.parameters()])
        results.append((out.detach(), [s.detach() for s in states], grads))
    return results


def assert_same(fused, plain) -> None:
    (out_f, states_f, grads_f), (out_p, states_p, grads_p) = fused, plain
    torch.testing.assert_close(out_f, out_p, rtol=0, atol=0, equal_nan=True)
    for a, b in zip(states_f, states_p):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(grads_f[0], grads_p[0], rtol=0, atol=0, equal_nan=True)
    for a, b in zip(grads_f[1:], grads_p[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


@compiled
@pytest.mark.parametrize(("name", "quant"), list(layer_cases()))
def test_every_layer_pooled_in_the_kernel_equals_run_then_pool(name: str, quant: str) -> None:
    # 8 x 5 planes of 12 x 12: blocks of 7 planes, so several blocks and both threads' chunks
    layer = make_layer(name, -3, 1, quant, num_neurons=5)
    pool = nn.MaxPool2d(2)
    x = 1.5 * torch.randn(6, 8, 5, 12, 12) + 0.3
    assert dispatch.explain_pooled(layer, x, pool)[0]
    assert_same(*fused_and_plain(layer, pool, x))
    # again from the held states of a run (the kernel's initial-state path)
    with torch.no_grad():
        layer.run_pooled(x, pool)
    assert_same(*fused_and_plain(layer, pool, 0.5 * x))


@compiled
@pytest.mark.parametrize(
    ("pool", "size"),
    [
        (nn.MaxPool2d(2), (24, 24)),  # one 576-element plane per block
        (nn.MaxPool2d(2), (7, 9)),  # odd sides: the last row and column are never pooled
        (nn.MaxPool2d(3, stride=2), (9, 11)),
        (nn.MaxPool2d((2, 3), stride=(1, 2)), (6, 8)),  # overlapping windows
        (nn.MaxPool2d(4), (32, 32)),  # a whole block per plane
    ],
)
@pytest.mark.parametrize(("name", "quant"), [("LIB", "round_unit"), ("LI", "identity"), ("DSRLITS", "probabilistic")])
def test_pooling_geometries_equal_torch_including_nan_and_inf(pool: nn.MaxPool2d, size: tuple[int, int], name: str,
                                                               quant: str) -> None:
    layer = make_layer(name, -3, 1, quant, seed=1, num_neurons=3)
    x = 2.0 * torch.randn(4, 2, 3, *size)
    x[1, 0, 1, 0, :3] = float("nan")  # graded outputs carry them into the windows
    x[2, 1, 2, 1, 1] = float("inf")
    x[3, 1, 0, :2, :2] = -float("inf")
    if name == "LIB":
        x = torch.nan_to_num(x)  # a NaN membrane never spikes and poisons nothing: keep the comparison on numbers
    assert dispatch.explain_pooled(layer, x, pool)[0]
    assert_same(*fused_and_plain(layer, pool, x))


@compiled
def test_a_loss_on_the_time_mean_and_a_loss_on_the_states_alone() -> None:
    # the output gradient is one row for every step (stride 0), or absent (only the final states get one)
    pool = nn.MaxPool2d(2)
    x = torch.randn(7, 3, 4, 10, 10) + 0.5
    for loss_of in (lambda out, mem: out.mean(0).sum(), lambda out, mem: (mem**2).sum()):
        grads = []
        for fused in (True, False):
            twin = make_layer("SLIB", -3, 1, "round_unit", seed=2)
            x_in = x.clone().requires_grad_(True)
            out = twin.run_pooled(x_in, pool) if fused else fold_time(pool, twin.run(x_in))
            grads.append(torch.autograd.grad(loss_of(out, twin.mem), [x_in, *twin.parameters()]))
        torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
        for a, b in zip(grads[0][1:], grads[1][1:]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


@compiled
def test_the_fused_run_calls_no_pooling_kernel_and_stores_no_unpooled_output() -> None:
    layer, pool = make_layer("LIB", -3, 1, "round_unit"), nn.MaxPool2d(2)
    x = torch.randn(5, 2, 4, 16, 16).requires_grad_(True)
    called = kernels_called(lambda: layer.run_pooled(x, pool).sum().backward())
    assert "max_pool2d_planes" not in called and "max_pool2d_planes_backward" not in called
    assert {"neuron_forward", "neuron_backward"} <= called
    layer.zero_states()
    called = kernels_called(lambda: fold_time(pool, layer.run(x)).sum().backward())
    assert {"max_pool2d_planes", "max_pool2d_planes_backward"} <= called


@compiled
@pytest.mark.parametrize(
    ("layer", "x", "pool", "reason"),
    [
        (lambda: tt.snn.LIB(3, dim=-3), torch.rand(4, 3, 8, 8), nn.MaxPool2d(2),
         "input of 4 dimensions (the fused pooling takes [T, B, C, H, W])"),
        (lambda: tt.snn.LIB(3, dim=-3, quant_fn=lambda v: v.round()), torch.rand(4, 2, 3, 8, 8), nn.MaxPool2d(2),
         "the layer takes the reference path (custom quant_fn function)"),
        (lambda: tt.snn.LIB(3, dim=-3), torch.rand(4, 2, 3, 8, 8), nn.MaxPool2d(2, padding=1),
         "the pooling takes torch's path (padding, dilation, ceil_mode or return_indices)"),
        (lambda: tt.snn.LIB(3, dim=-3), torch.rand(4, 2, 3, 8, 8, dtype=torch.float64), nn.MaxPool2d(2),
         "the layer takes the reference path (dtype torch.float64 (the fused kernels take float32))"),
        (lambda: tt.snn.LIB(3, dim=-3), torch.rand(2, 1, 3, 40, 40), nn.MaxPool2d(2),
         "planes of 40 x 40 (at most 1024 elements)"),
    ],
)
def test_explain_pooled_names_why_the_pooling_stays_separate_and_the_result_is_the_same(layer, x, pool,
                                                                                      reason: str) -> None:
    first, second = layer(), layer()
    second.load_state_dict(first.state_dict())
    assert dispatch.explain_pooled(first, x, pool) == (False, reason)
    torch.testing.assert_close(first.run_pooled(x, pool), fold_time(pool, second.run(x)), rtol=0, atol=0)


@compiled
def test_explain_pooled_under_a_forced_reference_path() -> None:
    layer, x = tt.snn.LIB(3, dim=-3), torch.rand(4, 2, 3, 8, 8)
    assert dispatch.explain_pooled(layer, x, nn.MaxPool2d(2)) == (True, "compiled C++ kernel, pooled as it runs")
    with dispatch.force("reference"):
        assert dispatch.explain_pooled(layer, x, nn.MaxPool2d(2)) == (False, "the layer takes the reference path (forced)")


class _Pool(nn.MaxPool2d):
    """A subclass: its forward may differ, so the chain never fuses it."""


@compiled
def test_run_chain_fuses_only_a_plain_hook_free_max_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    fused_pools: list[tuple[int, ...]] = []
    forward = cpu.CpuBackend.forward

    def spy(self, x, params, init, uniforms, meta, save):
        fused_pools.append(meta.pool)
        return forward(self, x, params, init, uniforms, meta, save)

    monkeypatch.setattr(cpu.CpuBackend, "forward", spy)
    x = torch.rand(3, 2, 4, 8, 8)
    hooked = nn.MaxPool2d(2)
    seen: list[int] = []
    hooked.register_forward_hook(lambda module, args, out: seen.append(out.shape[0]))
    for pool, fused in ((nn.MaxPool2d(2), True), (hooked, False), (_Pool(2), False)):
        fused_pools.clear()
        layer = tt.snn.LIB(4, dim=-3)
        out = run_chain([layer, pool], x)
        assert fused_pools == [(8, 8, 2, 2, 2, 2)] if fused else fused_pools == [()]
        layer.zero_states()
        torch.testing.assert_close(out, fold_time(pool, layer.run(x)), rtol=0, atol=0)
    assert seen == [6, 6]  # the hook ran on the folded [T * B, ...] call, in the chain and in the check


@compiled
def test_the_kernel_op_rejects_a_bad_pooling_geometry() -> None:
    ops = cpu.load()
    x, params, empty = torch.rand(2, 60), torch.zeros(13, 1), torch.empty(0)

    def forward(pool: list[int]):
        return ops.neuron_forward(x, params, empty, empty, False, False, False, 2, 0, 1.0, 1, 60, False, pool)

    with pytest.raises(RuntimeError, match=r"pool must be \[H, W, kernel h, kernel w, stride h, stride w\]"):
        forward([6, 10, 2, 2, 2])
    with pytest.raises(RuntimeError, match=r"pool must be .*the window inside the plane"):
        forward([6, 10, 7, 2, 2, 2])
    with pytest.raises(RuntimeError, match="60 elements per step are not whole pooling planes of 7 x 10"):
        forward([7, 10, 2, 2, 2, 2])
    out, _, _, arg = forward([6, 10, 2, 2, 2, 2])
    assert out.shape == (2, 15) and arg.shape == (2, 15) and arg.dtype == torch.uint8
    # dispatch.PLANE_LIMIT is the kernel's block: one more element is refused
    side = dispatch.PLANE_LIMIT + 1
    big = torch.rand(1, side)
    with pytest.raises(RuntimeError, match=f"not whole pooling planes of 1 x {side} \\(at most {dispatch.PLANE_LIMIT} "):
        ops.neuron_forward(big, params, empty, empty, False, False, False, 2, 0, 1.0, 1, side, False, [1, side, 1, 2, 1, 2])
    ops.neuron_forward(big[:, :-1], params, empty, empty, False, False, False, 2, 0, 1.0, 1, side - 1, False,
                       [1, side - 1, 1, 2, 1, 2])


class _OwnRun(tt.snn.LIB):
    """A subclass with its own ``run``: the chain must not go around it."""

    def run(self, x_seq: torch.Tensor) -> torch.Tensor:
        return super().run(2.0 * x_seq)


@compiled
def test_a_subclass_with_its_own_run_keeps_it_in_a_chain() -> None:
    x, pool = torch.rand(3, 2, 4, 8, 8), nn.MaxPool2d(2)
    layer = _OwnRun(4, dim=-3)
    out = run_chain([layer, pool], x)
    layer.zero_states()
    torch.testing.assert_close(out, fold_time(pool, tt.snn.LIB(4, dim=-3).run(2.0 * x)), rtol=0, atol=0)
