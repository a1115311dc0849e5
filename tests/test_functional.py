"""tt.functional: quantizers forward/backward exactly as the spec says; decay helpers."""

from __future__ import annotations

import math

import pytest
import torch

import tracetorch as tt
from tracetorch import functional as F


def test_sigmoid4x():
    x = torch.tensor([-1.0, 0.0, 0.25, 2.0], dtype=torch.float64, requires_grad=True)
    y = F.sigmoid4x(x)
    torch.testing.assert_close(y, 1 / (1 + torch.exp(-4 * x)), rtol=0, atol=1e-15)
    y.sum().backward()
    s = y.detach()
    torch.testing.assert_close(x.grad, 4 * s * (1 - s), rtol=0, atol=1e-15)
    assert F.sigmoid4x(torch.tensor(0.0)).item() == 0.5
    torch.testing.assert_close(F.Sigmoid4x()(x.detach()), s)


@pytest.mark.parametrize("step", [1.0, 0.5, 0.1, 3.0])
def test_round_ste_forward_exact_and_gradient_unchanged(step):
    x = (torch.randn(2000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4).requires_grad_()
    y = F.round_ste(step)(x)
    assert torch.equal(y.detach(), torch.round(x.detach() / step) * step)
    g = torch.randn(2000, dtype=torch.float64)
    y.backward(g)
    assert torch.equal(x.grad, g)


@pytest.mark.parametrize("step", [1.0, 0.25, 2.0])
def test_stochastic_round_ste_forward_exact_and_gradient_unchanged(step):
    x = (torch.randn(4000, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3).requires_grad_()
    torch.manual_seed(7)
    y = F.stochastic_round_ste(step)(x)
    torch.manual_seed(7)
    scaled = x.detach() / step
    low = torch.floor(scaled)
    want = (low + torch.bernoulli(scaled - low)) * step
    assert torch.equal(y.detach(), want)
    # every output is one of the two neighbouring multiples of step
    assert torch.all((y.detach() == low * step) | (y.detach() == (low + 1) * step))
    g = torch.randn(4000, dtype=torch.float64)
    y.backward(g)
    assert torch.equal(x.grad, g)


def test_stochastic_round_is_unbiased():
    torch.manual_seed(0)
    x = torch.full((200_000,), 0.3)
    assert abs(F.stochastic_round_ste()(x).mean().item() - 0.3) < 0.005


def test_probabilistic_ste_forward_and_backward():
    p = torch.rand(5000, generator=torch.Generator().manual_seed(3), dtype=torch.float64).requires_grad_()
    torch.manual_seed(11)
    y = F.probabilistic_ste()(p)
    torch.manual_seed(11)
    want = p.detach() * torch.bernoulli(p.detach())
    assert torch.equal(y.detach(), want)
    g = torch.randn(5000, dtype=torch.float64)
    y.backward(g)
    assert torch.equal(p.grad, g * 2 * p.detach())


def test_probabilistic_ste_mean_is_x_squared():
    torch.manual_seed(0)
    x = torch.full((200_000,), 0.6)
    assert abs(F.probabilistic_ste()(x).mean().item() - 0.36) < 0.005


def test_quantizer_step_size_validated_and_repr():
    with pytest.raises(ValueError, match=r"^step_size must be a positive number, got 0$"):
        F.round_ste(0)
    with pytest.raises(ValueError, match=r"^step_size must be a positive number, got -1.0$"):
        F.stochastic_round_ste(-1.0)
    with pytest.raises(ValueError, match=r"^step_size must be a positive number, got True$"):
        F.round_ste(True)
    assert repr(F.round_ste()) == "RoundSTE()"
    assert repr(F.round_ste(0.5)) == "RoundSTE(step_size=0.5)"
    assert repr(F.stochastic_round_ste(2)) == "StochasticRoundSTE(step_size=2.0)"
    assert repr(F.probabilistic_ste()) == "ProbabilisticSTE()"


@pytest.mark.parametrize("n", [0.5, 1.0, 3.0, 20.0])
def test_halflife_helpers(n):
    d = F.halflife_to_decay(n)
    assert d == pytest.approx(math.exp(-math.log(2) / n), rel=1e-15)
    assert d**n == pytest.approx(0.5, rel=1e-12)
    assert F.decay_to_halflife(d) == pytest.approx(n, rel=1e-12)
    assert F.decay_to_halflife(0.5) == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize("t", [1.5, 2.0, 10.0, 1000.0])
def test_timesteps_helpers(t):
    d = F.timesteps_to_decay(t)
    assert d == pytest.approx(1 - 1 / t, rel=1e-15)
    assert F.decay_to_timesteps(d) == pytest.approx(t, rel=1e-10)
    assert F.timesteps_to_decay(2.0) == 0.5


def test_inverses():
    y = torch.tensor([1e-4, 0.1, 0.5, 0.9, 0.9999], dtype=torch.float64)
    torch.testing.assert_close(torch.sigmoid(F.sigmoid_inverse(y)), y, rtol=1e-14, atol=0)
    torch.testing.assert_close(F.sigmoid_inverse(torch.tensor(0.5)), torch.tensor(0.0))
    z = torch.tensor([1e-3, 0.5, 1.0, 5.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(torch.nn.functional.softplus(F.softplus_inverse(z)), z, rtol=1e-13, atol=0)
    assert F.softplus_inverse(torch.tensor(math.log(2.0), dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-15)


def test_quantizers_are_usable_as_layer_quant_fn():
    layer = tt.snn.LIB(3, quant_fn=F.round_ste())
    out = layer(torch.tensor([[5.0, -5.0, 0.0]]))
    assert out.tolist() == [[1.0, 0.0, 0.0]]


def test_softplus_inverse_does_not_overflow():
    y = torch.tensor([50.0, 100.0, 1000.0])  # expm1(100) overflows float32
    raw = F.softplus_inverse(y)
    assert torch.isfinite(raw).all()
    torch.testing.assert_close(torch.nn.functional.softplus(raw), y)
    layer = tt.snn.LIT(2, pos_threshold=100.0)
    torch.testing.assert_close(layer.pos_threshold, torch.full((2,), 100.0))
