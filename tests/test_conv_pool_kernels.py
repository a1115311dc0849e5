"""The compiled Conv2d (output and weight gradient) on spike inputs and the compiled max pooling, against torch's own ops."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from kernel_support import kernels_called
from torch import nn

import tracetorch as tt
from tracetorch.kernels import cpu, dispatch
from tracetorch.kernels.event_conv import ConvPlan, conv2d, conv_plan
from tracetorch.kernels.event_conv import explain as explain_conv
from tracetorch.kernels.pooling import explain as explain_pool
from tracetorch.kernels.pooling import max_pool2d

compiled = pytest.mark.skipif(not cpu.available(), reason="needs the compiled C++ kernels")


def spikes(*shape: int, density: float = 0.15, seed: int = 0) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < density).float()


def forward_and_grads(fn, module: nn.Module, x: torch.Tensor, seed: int = 1) -> list[torch.Tensor]:
    """The output and the gradients of x and of every parameter, for a fixed random output gradient."""
    x = x.detach().requires_grad_()
    out = fn(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return [out, *torch.autograd.grad(out, [x, *module.parameters()], g)]


CONVS = [
    dict(in_channels=1, out_channels=12, kernel_size=5),
    dict(in_channels=12, out_channels=64, kernel_size=5),
    dict(in_channels=3, out_channels=7, kernel_size=3, padding=1),
    dict(in_channels=2, out_channels=9, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    dict(in_channels=4, out_channels=5, kernel_size=3, stride=3, bias=False),
    dict(in_channels=3, out_channels=70, kernel_size=2, padding=3),  # more than 64 outputs: two slices
]


def conv_and_spikes(kwargs: dict, samples: int) -> tuple[nn.Conv2d, torch.Tensor]:
    """A seeded ``Conv2d(**kwargs)`` and spikes [samples, in_channels, 17, 16] with one sample all zeros."""
    torch.manual_seed(0)
    x = spikes(samples, kwargs["in_channels"], 17, 16)
    x[3] = 0.0
    return nn.Conv2d(**kwargs), x


@compiled
@pytest.mark.parametrize("kwargs", CONVS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_event_conv2d_equals_torch_with_gradients(kwargs: dict) -> None:
    conv, x = conv_and_spikes(kwargs, 32)
    assert explain_conv(conv, x)[0] == "events"
    assert cpu.load().binary_rows(x.view(32, -1), 0.5)[0].numel() == 33  # indexed: the event path runs
    got, want = forward_and_grads(lambda v: conv2d(conv, v), conv, x), forward_and_grads(conv, conv, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@compiled
def test_event_conv2d_forward_of_a_large_layer_in_bands_of_output_rows() -> None:
    # 64 x 64 outputs reached by 64 * 3 * 3 weight rows each: more slots than a thread lists at once
    torch.manual_seed(4)
    conv = nn.Conv2d(64, 8, 3)
    x = spikes(2, 64, 66, 66, density=0.1)
    indptr, indices = cpu.load().binary_rows(x.view(2, -1), 0.5)
    w, b = conv.weight.detach(), conv.bias.detach()
    got = cpu.load().event_conv2d_forward(indptr, indices, w, b, [66, 66], [1, 1], [0, 0], [1, 1])
    want = torch.nn.functional.conv2d(x.double(), w.double(), b.double())
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


@compiled
def test_event_conv2d_weight_gradient_does_not_depend_on_the_thread_count() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = spikes(40, 3, 12, 12, density=0.3)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(forward_and_grads(lambda v: conv2d(conv, v), conv, x))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:  # the weight gradient (the bias's and the rest are torch's own)
        assert torch.equal(results[0][2], other[2])


@compiled
@pytest.mark.parametrize(("kwargs", "height"), [
    (dict(kernel_size=(5, 3), padding=(3, 1), dilation=(1, 2)), 10),  # stride 1: dense channels gather, sparse scatter
    (dict(kernel_size=7, padding=3), 4),  # a kernel larger than the input
    (dict(kernel_size=3, stride=2, padding=1), 10),  # stride 2: every one scattered
], ids=["unit-stride", "large-kernel", "stride-2"])
def test_event_conv2d_weight_gradient_equals_float64(kwargs: dict, height: int) -> None:
    # channels from 2% to 90% ones: under and over the two ones a row from which a channel gathers
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 70, **kwargs)  # 70 outputs: a chunk of eight vectors and one of one
    density = torch.tensor([0.02, 0.5, 0.9, 0.2]).view(1, 4, 1, 1)
    x = (torch.rand(6, 4, height, 9, generator=torch.Generator().manual_seed(1)) < density).float()
    out_shape = conv(x).shape
    g = torch.randn(out_shape)
    indptr, indices = cpu.load().binary_rows(x.view(6, -1), 1.0)
    taps, grad_b = cpu.load().event_conv2d_grad_weight(indptr, indices, g, 4, [height, 9], list(conv.kernel_size),
                                                       list(conv.stride), list(conv.padding), list(conv.dilation))
    want = torch.nn.grad.conv2d_weight(x.double(), conv.weight.shape, g.double(), conv.stride, conv.padding,
                                       conv.dilation)
    kh, kw = conv.kernel_size
    torch.testing.assert_close(taps.view(4, kh, kw, 70).permute(3, 0, 1, 2).double(), want, rtol=0, atol=2e-5)
    torch.testing.assert_close(grad_b.double(), g.double().sum((0, 2, 3)), rtol=0, atol=2e-5)


def event_output(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The compiled event-driven conv2d output (called directly: :func:`conv2d` picks it only where it pays)."""
    indptr, indices = cpu.load().binary_rows(x.reshape(x.shape[0], -1), 1.0)
    bias = conv.weight.new_empty(0) if conv.bias is None else conv.bias.detach()
    return cpu.load().event_conv2d_forward(indptr, indices, conv.weight.detach(), bias, list(x.shape[2:]),
                                           list(conv.stride), list(conv.padding), list(conv.dilation))


@compiled
@pytest.mark.parametrize("kwargs", CONVS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_event_conv2d_kernel_output_equals_torch(kwargs: dict) -> None:
    conv, x = conv_and_spikes(kwargs, 12)
    with torch.no_grad():
        torch.testing.assert_close(event_output(conv, x), conv(x), rtol=1e-5, atol=1e-5)


@compiled
def test_event_conv2d_output_adds_the_weights_of_the_ones() -> None:
    # out[b, :, y, x] = bias + the weights W[:, c, i, j] whose input fired, in float64 from the definition
    conv = nn.Conv2d(2, 3, 2, padding=1, stride=2)
    x = spikes(4, 2, 5, 6, density=0.4)
    got = event_output(conv, x).double()
    w, b = conv.weight.double().detach(), conv.bias.double().detach()
    padded = nn.functional.pad(x.double(), (1, 1, 1, 1))
    for n, c_out, y, x_out in itertools.product(*(range(s) for s in got.shape)):
        window = padded[n, :, 2 * y: 2 * y + 2, 2 * x_out: 2 * x_out + 2]
        assert abs(got[n, c_out, y, x_out] - (b[c_out] + w[c_out][window == 1].sum())) < 1e-5


@compiled
def test_event_conv2d_output_does_not_depend_on_the_thread_count() -> None:
    conv = nn.Conv2d(5, 20, 3, padding=1)
    x = spikes(24, 5, 9, 9, density=0.2)
    threads = torch.get_num_threads()
    try:
        outputs = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            outputs.append(event_output(conv, x))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outputs[0], other) for other in outputs[1:])


VALID = ((1, 1), (0, 0), (1, 1))


@pytest.mark.parametrize(
    ("weight", "x", "geometry", "ones", "plan"),
    [((64, 12, 5, 5), (640, 12, 12, 12), VALID, 66_000, ("events", "events")),  # 5% ones into 12 channels
     ((64, 12, 5, 5), (640, 12, 12, 12), VALID, 250_000, ("events", "events")),  # 23%, late in the bench's epoch
     ((64, 12, 5, 5), (640, 12, 12, 12), VALID, 550_000, ("dense", None)),  # 50%: weight gradient a tie here
     ((12, 1, 5, 5), (640, 1, 28, 28), VALID, 65_000, ("direct", "direct")),  # one input channel
     ((12, 1, 5, 5), (640, 1, 28, 28), ((2, 2), (0, 0), (1, 1)), 65_000, ("dense", "events"))],  # stride 2: no direct
)
def test_conv_plan_picks_the_cheapest_kernels(weight, x, geometry, ones: int, plan: tuple[str, str | None]) -> None:
    got = conv_plan(weight, x, geometry, ones)
    assert got.forward == plan[0]
    assert plan[1] is None or got.weight_grad == plan[1]


DIRECT = [dict(in_channels=1, out_channels=12, kernel_size=5),
          dict(in_channels=1, out_channels=32, kernel_size=3, padding=1),
          dict(in_channels=3, out_channels=7, kernel_size=(3, 8), padding=(2, 1)),
          dict(in_channels=2, out_channels=9, kernel_size=1)]


@compiled
@pytest.mark.parametrize("kwargs", DIRECT, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("width", [16, 37])  # whole vectors, and a tail
def test_direct_conv2d_kernels_equal_torch(kwargs: dict, width: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs)
    x = spikes(6, kwargs["in_channels"], 11, width, density=0.3)
    padding = list(conv.padding)
    with torch.no_grad():
        want = conv(x)
        torch.testing.assert_close(cpu.load().conv2d_direct_forward(x, conv.weight, conv.bias, padding), want,
                                   rtol=1e-5, atol=1e-5)
        g = torch.randn(want.shape)
        _, want_w, want_b = torch.ops.aten.convolution_backward(g, x, conv.weight, [conv.out_channels], [1, 1], padding,
                                                                [1, 1], False, [0, 0], 1, [False, True, True])
        got_w, got_b = cpu.load().conv2d_direct_grad_weight(x, g, list(conv.kernel_size), padding)
    torch.testing.assert_close(got_w, want_w, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got_b, want_b, rtol=1e-5, atol=1e-4)


@compiled
def test_direct_weight_gradient_does_not_depend_on_the_thread_count() -> None:
    x, g = spikes(40, 1, 14, 14, density=0.2), torch.randn(40, 5, 12, 12)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(cpu.load().conv2d_direct_grad_weight(x, g, [3, 3], [0, 0]))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for other in results[1:] for a, b in zip(results[0], other))


@compiled
@pytest.mark.parametrize(("value", "density"), [(0.5, 0.1), (1.0, 0.9)], ids=["graded", "dense"])
def test_event_conv2d_takes_torch_for_inputs_that_are_not_sparse_spikes(value: float, density: float) -> None:
    conv = nn.Conv2d(16, 24, 3)  # many taps per output: the plan for a graded input is torch's
    x = spikes(16, 16, 10, 10, density=density)
    x[0, 0, 0, 0] = value
    assert cpu.load().binary_rows(x.view(16, -1), 0.5)[0].numel() == 0
    assert conv_plan(tuple(conv.weight.shape), tuple(x.shape), VALID, None).forward == "dense"
    assert torch.equal(conv2d(conv, x), conv(x))


@compiled
def test_graded_input_with_few_taps_takes_the_direct_kernels() -> None:
    conv = nn.Conv2d(1, 32, 3, padding=1)  # a first layer on raw images: oneDNN is slow at one input channel
    x = torch.rand(64, 1, 28, 28)
    assert conv_plan(tuple(conv.weight.shape), tuple(x.shape), ((1, 1), (1, 1), (1, 1)), None) == ConvPlan("direct", "direct")
    got, want = forward_and_grads(lambda v: conv2d(conv, v), conv, x), forward_and_grads(conv, conv, x)
    wide = copy.deepcopy(conv).double()
    exact = forward_and_grads(lambda v: wide(v.double()).float(), wide, x)
    for a, b, e in zip(got, want, exact):  # as close to the float64 result as torch's float32 result is
        assert (a.double() - e).abs().max() <= 2 * (b.double() - e).abs().max() + 1e-5
    called = kernels_called(lambda: forward_and_grads(lambda v: conv2d(conv, v), conv, x))
    assert {"conv2d_direct_forward", "conv2d_direct_grad_weight"} <= called


@pytest.mark.parametrize(
    ("conv", "x", "reason"),
    [
        (nn.Conv2d(4, 4, 3, groups=2), spikes(64, 4, 8, 8), "grouped, string-padded or non-zero-padded convolution"),
        (nn.Conv2d(4, 4, 3, padding="same"), spikes(64, 4, 8, 8), "grouped, string-padded or non-zero-padded convolution"),
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), spikes(64, 4, 8, 8),
         "grouped, string-padded or non-zero-padded convolution"),
        (nn.Conv2d(4, 4, 3).double(), spikes(64, 4, 8, 8).double(), "dtype other than float32"),
        (nn.Conv2d(4, 4, 3), spikes(2, 4, 8, 8), "fewer than 4096 input elements"),
        (nn.Conv2d(4, 4, 3), spikes(64, 3, 8, 8), "shapes for torch's own checks"),
    ],
)
def test_explain_names_why_a_convolution_takes_torch(conv: nn.Conv2d, x: torch.Tensor, reason: str) -> None:
    assert explain_conv(conv, x) == ("dense", reason)


POOLS = [dict(kernel_size=2), dict(kernel_size=3, stride=2), dict(kernel_size=(2, 3), stride=(1, 2)),
         dict(kernel_size=3, stride=1)]


@compiled
@pytest.mark.parametrize("kwargs", POOLS, ids=str)
@pytest.mark.parametrize("kind", ["spikes", "graded"])
def test_compiled_max_pool_equals_torch_exactly(kwargs: dict, kind: str) -> None:
    pool = nn.MaxPool2d(**kwargs)
    x = spikes(6, 5, 13, 11, density=0.3) if kind == "spikes" else torch.randn(6, 5, 13, 11)
    assert explain_pool(pool, x)[0] == "compiled"
    got, want = forward_and_grads(lambda v: max_pool2d(pool, v), pool, x), forward_and_grads(pool, pool, x)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@compiled
@pytest.mark.parametrize("size", [(24, 24), (8, 8), (7, 25), (5, 28), (9, 6), (3, 16), (2, 2)], ids=str)
def test_vectorized_2x2_pool_equals_torch_at_every_plane_size(size: tuple[int, int]) -> None:
    # runs of four outputs go in pairs through vectors, across rows for narrow planes; the rest
    # (odd run counts, widths not a multiple of 8) through the scalar loop
    pool = nn.MaxPool2d(2)
    gen = torch.Generator().manual_seed(sum(size))
    x = torch.randn(3, 5, *size, generator=gen).round(decimals=0)  # many ties
    x.view(-1)[torch.randint(0, x.numel(), (x.numel() // 10,), generator=gen)] = float("nan")
    x.view(-1)[torch.randint(0, x.numel(), (x.numel() // 10,), generator=gen)] = -float("inf")
    assert explain_pool(pool, x)[0] == "compiled"
    got, want = forward_and_grads(lambda v: max_pool2d(pool, v), pool, x), forward_and_grads(pool, pool, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=0)


@compiled
def test_compiled_max_pool_resolves_ties_and_nans_like_torch() -> None:
    pool = nn.MaxPool2d(2)
    x = torch.tensor([[[[1.0, 1.0, float("nan"), 2.0], [1.0, 0.0, 3.0, float("nan")],
                        [-float("inf"), -float("inf"), 0.0, -0.0], [-float("inf"), -float("inf"), -0.0, 0.0]]]])
    got, want = forward_and_grads(lambda v: max_pool2d(pool, v), pool, x), forward_and_grads(pool, pool, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("pool", "x", "reason"),
    [
        (nn.MaxPool2d(2, padding=1), torch.rand(2, 3, 8, 8), "padding, dilation, ceil_mode or return_indices"),
        (nn.MaxPool2d(2, ceil_mode=True), torch.rand(2, 3, 9, 9), "padding, dilation, ceil_mode or return_indices"),
        (nn.MaxPool2d(2, return_indices=True), torch.rand(2, 3, 8, 8), "padding, dilation, ceil_mode or return_indices"),
        (nn.MaxPool2d(17), torch.rand(2, 3, 20, 20), "more than 256 taps per window"),
        (nn.MaxPool2d(2), torch.rand(3, 8, 8), "not a 4-d float32 CPU tensor"),
        (nn.MaxPool2d(2), torch.rand(2, 3, 8, 8, dtype=torch.float64), "not a 4-d float32 CPU tensor"),
        (nn.MaxPool2d(3), torch.rand(2, 3, 2, 8), "input smaller than the window (torch's own error)"),
    ],
)
def test_explain_names_why_a_pooling_takes_torch(pool: nn.MaxPool2d, x: torch.Tensor, reason: str) -> None:
    assert explain_pool(pool, x) == ("torch", reason)
    with dispatch.force("reference"):
        assert explain_pool(nn.MaxPool2d(2), torch.rand(2, 3, 8, 8)) == ("torch", "forced")


@compiled
def test_a_conv_snn_runs_the_compiled_paths_and_equals_stepping(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracetorch.kernels import event_conv, fused, pooling

    calls: list[str] = []
    for module, name in ((event_conv, "_EventConv2d"), (pooling, "_MaxPool2d")):
        function = getattr(module, name)
        monkeypatch.setattr(function, "apply", lambda *a, _f=function.apply, _n=name: calls.append(_n) or _f(*a))
    neuron_apply = fused._FusedSequence.apply
    monkeypatch.setattr(fused._FusedSequence, "apply",
                        lambda *a: calls.append(f"neuron pooled {a[4].pool}" if a[4].pool else "neuron") or neuron_apply(*a))
    torch.manual_seed(0)
    q = tt.functional.round_ste
    net = tt.Sequential(nn.Conv2d(1, 6, 5), tt.snn.LIB(6, dim=-3, quant_fn=q()), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3),
                        tt.snn.LIB(8, dim=-3, quant_fn=q()), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
                        tt.snn.LI(10))
    x = spikes(6, 16, 1, 24, 24, density=0.2)
    net.zero_states()
    seq = net.run(x)
    seq.sum().backward()
    # each LIB pools its spikes in the neuron kernel, (H, W, kernel, stride): no separate pooling call
    assert calls == ["_EventConv2d", "neuron pooled (20, 20, 2, 2, 2, 2)", "_EventConv2d",
                     "neuron pooled (8, 8, 2, 2, 2, 2)", "neuron"]
    seq_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.zero_states()
    steps = torch.stack([net(x_t) for x_t in x])
    steps.sum().backward()
    torch.testing.assert_close(seq, steps, rtol=1e-5, atol=1e-5)
    for a, b in zip(seq_grads, (p.grad for p in net.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
