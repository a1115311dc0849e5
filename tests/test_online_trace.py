"""Trace learning (OTTT): gradients against BPTT and hand-computed formulas, states, memory, errors."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch.online import (
    TraceConv,
    TraceLinear,
    decay_of,
    disable_trace_learning,
    enable_trace_learning,
    reset_traces,
    trace_wrap,
)

DT = torch.float64


def _per_step_grads(model: nn.Module, xs: torch.Tensor, loss_at) -> dict[str, torch.Tensor]:
    """Online: backward each step's loss, detach every state, sum the gradients."""
    model.zero_grad()
    model.zero_states()
    for t, x_t in enumerate(xs):
        loss_at(t, model(x_t)).backward()
        model.detach_states()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _bptt_grads(model: nn.Module, xs: torch.Tensor, loss_at) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model.zero_states()
    sum(loss_at(t, model(x_t)) for t, x_t in enumerate(xs)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _mse_to(targets: torch.Tensor):
    return lambda t, out: 0.5 * ((out - targets[t]) ** 2).sum()


def test_linear_li_trace_gradient_equals_bptt_and_the_hand_formula():
    torch.manual_seed(0)
    steps, batch = 12, 3
    fc = nn.Linear(4, 2).to(DT)
    net = tt.Sequential(fc, tt.snn.LI(2, beta=0.8, beta_rank=0, learn_beta=False).to(DT))
    beta = net[1].beta.item()
    xs, ys = torch.randn(steps, batch, 4, dtype=DT), torch.randn(steps, batch, 2, dtype=DT)
    bptt = _bptt_grads(net, xs, _mse_to(ys))

    # by hand: mem_t = beta mem_(t-1) + W x_t + b; g_t = dl_t/dmem_t = mem_t - y_t; a_t = beta a_(t-1) + x_t
    w, b = fc.weight.detach(), fc.bias.detach()
    mem, trace, count = torch.zeros(batch, 2, dtype=DT), torch.zeros(batch, 4, dtype=DT), 0.0
    grad_w, grad_b = torch.zeros_like(w), torch.zeros_like(b)
    for x, y in zip(xs, ys):
        mem = beta * mem + x @ w.T + b
        trace, count = beta * trace + x, beta * count + 1
        g = mem - y
        grad_w += g.T @ trace
        grad_b += g.sum(0) * count

    assert enable_trace_learning(net) == ["0"]
    online = _per_step_grads(net, xs, _mse_to(ys))
    torch.testing.assert_close(online["0.weight"], grad_w)
    torch.testing.assert_close(online["0.bias"], grad_b)
    torch.testing.assert_close(online["0.weight"], bptt["0.weight"])
    torch.testing.assert_close(online["0.bias"], bptt["0.bias"])


def test_lib_with_reset_gets_the_ottt_approximation_not_bptt():
    torch.manual_seed(1)
    steps, batch = 15, 2
    fc = nn.Linear(3, 4).to(DT)
    lib = tt.snn.LIB(4, beta=0.7, beta_rank=0, threshold=0.5, learn_beta=False).to(DT)
    beta, threshold = lib.beta.item(), lib.threshold[0].item()
    net = tt.Sequential(fc, lib)
    xs, cs = torch.rand(steps, batch, 3, dtype=DT) * 2, torch.randn(steps, batch, 4, dtype=DT)
    loss_at = lambda t, out: (out * cs[t]).sum()
    bptt = _bptt_grads(net, xs, loss_at)

    # by hand: s_t = sigmoid(4 z_t), z_t = mem_t - threshold; g_t = c_t * 4 s_t (1 - s_t); reset mem -= s_t threshold
    w, b = fc.weight.detach(), fc.bias.detach()
    mem, trace, count = torch.zeros(batch, 4, dtype=DT), torch.zeros(batch, 3, dtype=DT), 0.0
    grad_w, grad_b = torch.zeros_like(w), torch.zeros_like(b)
    for x, c in zip(xs, cs):
        mem = beta * mem + x @ w.T + b
        s = torch.sigmoid(4 * (mem - threshold))
        mem = mem - s * threshold
        trace, count = beta * trace + x, beta * count + 1
        g = c * 4 * s * (1 - s)
        grad_w += g.T @ trace
        grad_b += g.sum(0) * count

    enable_trace_learning(net)
    online = _per_step_grads(net, xs, loss_at)
    torch.testing.assert_close(online["0.weight"], grad_w)
    torch.testing.assert_close(online["0.bias"], grad_b)
    assert not torch.allclose(online["0.weight"], bptt["0.weight"], rtol=1e-3, atol=1e-6)  # the reset path is dropped


def test_lam_zero_equals_plain_per_step_gradients_through_a_deep_network():
    torch.manual_seed(2)
    plain = tt.Sequential(
        nn.Linear(5, 6), tt.snn.LIB(6), nn.Linear(6, 6), tt.snn.SRLIB(6, rec_weight=0.3), nn.Linear(6, 3), tt.snn.LI(3)
    ).to(DT)
    xs, ys = torch.rand(8, 4, 5, dtype=DT), torch.randn(8, 4, 3, dtype=DT)
    expected = _per_step_grads(plain, xs, _mse_to(ys))
    assert enable_trace_learning(plain, lam=0.0) == ["0", "2", "4"]
    got = _per_step_grads(plain, xs, _mse_to(ys))
    assert sorted(got) == sorted(expected)
    for name in expected:  # weights, biases and the neuron parameters: the input gradients flow as usual
        torch.testing.assert_close(got[name], expected[name], msg=name)


@pytest.mark.parametrize(
    "conv",
    [
        lambda: nn.Conv2d(2, 3, 3, padding=1),
        lambda: nn.Conv2d(2, 3, 3, stride=2, dilation=1, bias=False),
        lambda: nn.Conv2d(2, 4, 3, padding="same", padding_mode="reflect", groups=2),
        lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="circular"),
        lambda: nn.Conv3d(2, 3, 2),
    ],
    ids=["padded", "strided-nobias", "reflect-same-groups", "conv1d-circular-even", "conv3d"],
)
def test_conv_li_trace_gradient_equals_bptt(conv):
    torch.manual_seed(3)
    module = conv().to(DT)
    spatial = module.weight.ndim - 2
    x_shape = (2, 2) + (6,) * spatial
    out_shape = module(torch.zeros(x_shape, dtype=DT)).shape
    net = tt.Sequential(module, tt.snn.LI(module.out_channels, dim=-(spatial + 1), beta=0.6, beta_rank=0).to(DT))
    xs, ys = torch.randn(7, *x_shape, dtype=DT), torch.randn(7, *out_shape, dtype=DT)
    bptt = _bptt_grads(net, xs, _mse_to(ys))
    enable_trace_learning(net)
    assert isinstance(net[0], TraceConv)
    online = _per_step_grads(net, xs, _mse_to(ys))
    for name in [n for n in bptt if n.startswith("0.")]:
        torch.testing.assert_close(online[name], bptt[name], msg=name)


def test_default_lam_follows_the_fed_layer():
    rank1 = tt.snn.LIB(3, beta=torch.tensor([0.5, 0.6, 0.7]))
    assert decay_of(rank1).item() == pytest.approx(0.6)
    dual = tt.snn.DSLIB(3, pos_beta=0.9, neg_beta=0.5)
    assert decay_of(dual).item() == pytest.approx(0.7)
    net = tt.Sequential(nn.Linear(2, 3), nn.Dropout(0.0), rank1)
    enable_trace_learning(net)
    net(torch.ones(1, 2))
    net(torch.ones(1, 2))
    torch.testing.assert_close(net[0].trace, torch.full((1, 2), 1.6))  # 0.6 * 1 + 1
    torch.testing.assert_close(net[0].bias_trace, torch.full((1, 2), 1.6))
    with torch.no_grad():  # a learned beta is followed at every step
        rank1.raw_beta.fill_(0.0)  # sigmoid(0) = 0.5
    net(torch.ones(1, 2))
    torch.testing.assert_close(net[0].trace, torch.full((1, 2), 1.8))


def test_traces_are_states_zeroed_saved_and_loaded_with_the_model():
    torch.manual_seed(4)
    net = tt.Sequential(nn.Linear(3, 4), tt.snn.LIB(4), nn.Linear(4, 2), tt.snn.LI(2))
    keys_before = sorted(net.state_dict())
    enable_trace_learning(net)
    assert sorted(net.state_dict()) == keys_before  # checkpoints stay interchangeable
    xs = torch.rand(6, 2, 3)
    for x in xs[:3]:
        net(x)
    saved = net.save_states()
    assert {"0.trace", "0.bias_trace", "2.trace", "2.bias_trace"} <= set(saved)
    after = [net(x) for x in xs[3:]]
    net.zero_states()
    assert net[0].trace is None and net[1].mem is None
    net.load_states(saved)
    torch.testing.assert_close(torch.stack([net(x) for x in xs[3:]]), torch.stack(after))
    for x in xs[:2]:
        net(x)
    reset_traces(net)
    assert net[0].trace is None and net[2].bias_trace is None and net[1].mem is not None


def test_disable_trace_learning_restores_plain_modules_with_the_same_parameters():
    net = tt.Sequential(nn.Conv2d(1, 2, 3), tt.snn.LIB(2, dim=-3), nn.Flatten(), nn.Linear(8, 2))
    weight = net[0].weight
    assert enable_trace_learning(net) == ["0"]  # the readout Linear feeds no spiking layer
    assert isinstance(net[0], TraceConv) and type(net[3]) is nn.Linear
    assert enable_trace_learning(net) == ["0"]  # idempotent
    assert disable_trace_learning(net) == ["0"]
    assert type(net[0]) is nn.Conv2d and net[0].weight is weight
    assert net(torch.rand(2, 1, 4, 4)).shape == (2, 2)


def _peak_saved_tensors(step_fn, steps: int) -> int:
    """Peak number of tensors saved for backward and still alive, over ``steps`` calls."""
    alive, peak = [0], [0]

    class Saved:
        def __init__(self, tensor):
            self.tensor = tensor.detach()  # no grad_fn: no reference cycle keeps a released graph alive
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
            weakref.finalize(self, lambda: alive.__setitem__(0, alive[0] - 1))

    with torch.autograd.graph.saved_tensors_hooks(Saved, lambda saved: saved.tensor):
        for t in range(steps):
            step_fn(t)
    return peak[0]


@pytest.mark.parametrize("mode", ["trace", "bptt"])
def test_saved_tensors_do_not_grow_with_the_sequence_in_trace_mode(mode):
    def peak(steps: int) -> int:
        torch.manual_seed(5)
        net = tt.Sequential(nn.Linear(3, 8), tt.snn.LIB(8), nn.Linear(8, 2), tt.snn.LI(2))
        if mode == "trace":
            enable_trace_learning(net)
        losses = []

        def step(t):
            loss = net(torch.rand(4, 3)).pow(2).sum()
            if mode == "trace":
                loss.backward()
                net.detach_states()
            else:
                losses.append(loss)
                if t == steps - 1:
                    sum(losses).backward()

        return _peak_saved_tensors(step, steps)

    short, long = peak(10), peak(100)
    if mode == "trace":
        assert short == long > 0
    else:
        assert long > 8 * short


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"TraceLinear: lam must be a float in \[0, 1\), got 1.5"):
        TraceLinear(nn.Linear(2, 2), lam=1.5)
    with pytest.raises(ValueError, match="TraceLinear: give lam"):
        TraceLinear(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="trace learning wraps nn.Linear and nn.Conv1d/2d/3d, got ReLU"):
        trace_wrap(nn.ReLU(), lam=0.5)
    with pytest.raises(TypeError, match="TraceConv wraps an nn.Conv1d/Conv2d/Conv3d, got Linear"):
        TraceConv(nn.Linear(2, 2), lam=0.5)
    with pytest.raises(ValueError, match="cannot infer the trace decay from ReLU"):
        TraceLinear(nn.Linear(2, 2), source=nn.ReLU())
    with pytest.raises(ValueError, match="no Linear/Conv feeding a spiking layer found"):
        enable_trace_learning(tt.Sequential(nn.Linear(2, 2), nn.ReLU(), tt.snn.LIB(2)))
    fc = TraceLinear(nn.Linear(3, 2), lam=0.5)
    with pytest.raises(ValueError, match=r"has 4 at dim=-1, expected num_neurons=3"):
        fc(torch.rand(2, 4))
    fc(torch.rand(2, 3))
    with pytest.raises(ValueError, match="batch size changed"):
        fc(torch.rand(5, 3))


def test_autocast_bfloat16_gives_float32_gradients_close_to_full_precision():
    torch.manual_seed(6)
    net = tt.Sequential(nn.Linear(4, 8), tt.snn.LIB(8), nn.Unflatten(1, (1, 8)), nn.Conv1d(1, 2, 3, padding=1),
                        tt.snn.LIB(2, dim=-2), nn.Flatten(), nn.Linear(16, 3), tt.snn.LI(3))
    assert enable_trace_learning(net) == ["0", "3", "6"]
    xs = torch.rand(4, 2, 4)
    full = _per_step_grads(net, xs, lambda t, out: out.float().pow(2).sum())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = _per_step_grads(net, xs, lambda t, out: out.float().pow(2).sum())
    for name, grad in half.items():
        assert grad.dtype == torch.float32, name
        torch.testing.assert_close(grad, full[name], rtol=0.1, atol=0.05, msg=name)
