"""Spike functions, straight-through quantizers, decay helpers and inverses.

Everything here is a plain function or a tiny stateless ``nn.Module`` so that it can
be passed as ``spike_fn`` / ``quant_fn`` to any firing layer and shows up readably in
``repr``.

Example:
    >>> import torch, tracetorch as tt
    >>> q = tt.functional.round_ste()
    >>> q(torch.tensor([0.2, 0.7]))
    tensor([0., 1.])
    >>> round(tt.functional.halflife_to_decay(1.0), 3)
    0.5
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "sigmoid4x",
    "Sigmoid4x",
    "round_ste",
    "stochastic_round_ste",
    "probabilistic_ste",
    "RoundSTE",
    "StochasticRoundSTE",
    "ProbabilisticSTE",
    "halflife_to_decay",
    "decay_to_halflife",
    "timesteps_to_decay",
    "decay_to_timesteps",
    "sigmoid_inverse",
    "softplus_inverse",
]


def sigmoid4x(x: Tensor) -> Tensor:
    """``sigmoid(4x)``: the default ``spike_fn``; slope 1 at the threshold."""
    return torch.sigmoid(4.0 * x)


class Sigmoid4x(nn.Module):
    """Module form of :func:`sigmoid4x`."""

    def forward(self, x: Tensor) -> Tensor:
        return sigmoid4x(x)


def _check_step(step_size: float) -> float:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not step_size > 0:
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    return float(step_size)


class RoundSTE(nn.Module):
    """Forward ``round(x / step) * step``; backward passes the gradient unchanged."""

    def __init__(self, step_size: float = 1.0) -> None:
        super().__init__()
        self.step_size = _check_step(step_size)

    def forward(self, x: Tensor) -> Tensor:
        q = torch.round(x / self.step_size) * self.step_size
        return x + (q - x).detach()

    def extra_repr(self) -> str:
        return "" if self.step_size == 1.0 else f"step_size={self.step_size}"


class StochasticRoundSTE(nn.Module):
    """Forward ``(floor(x/step) + bernoulli(frac(x/step))) * step``; backward unchanged."""

    def __init__(self, step_size: float = 1.0) -> None:
        super().__init__()
        self.step_size = _check_step(step_size)

    def forward(self, x: Tensor) -> Tensor:
        scaled = x.detach() / self.step_size
        low = torch.floor(scaled)
        q = (low + torch.bernoulli(scaled - low)) * self.step_size
        return x + (q - x).detach()

    def extra_repr(self) -> str:
        return "" if self.step_size == 1.0 else f"step_size={self.step_size}"


class _ProbabilisticFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * torch.bernoulli(x.detach().clamp(0.0, 1.0))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * 2.0 * x


class ProbabilisticSTE(nn.Module):
    """Forward ``x * bernoulli(x)``; backward ``grad * 2x`` (the gradient of E[x*b] = x^2)."""

    def forward(self, x: Tensor) -> Tensor:
        return _ProbabilisticFn.apply(x)


def round_ste(step_size: float = 1.0) -> RoundSTE:
    """Straight-through rounding to multiples of ``step_size``."""
    return RoundSTE(step_size)


def stochastic_round_ste(step_size: float = 1.0) -> StochasticRoundSTE:
    """Straight-through stochastic rounding to multiples of ``step_size``."""
    return StochasticRoundSTE(step_size)


def probabilistic_ste() -> ProbabilisticSTE:
    """Straight-through Bernoulli sampling scaled by the probability."""
    return ProbabilisticSTE()


def halflife_to_decay(halflife: float) -> float:
    """``exp(-ln 2 / n)``: the decay that halves a trace every ``n`` steps."""
    return math.exp(-math.log(2.0) / halflife)


def decay_to_halflife(decay: float) -> float:
    """``-ln 2 / ln d``: inverse of :func:`halflife_to_decay`."""
    return -math.log(2.0) / math.log(decay)


def timesteps_to_decay(timesteps: float) -> float:
    """``1 - 1/t``: the decay whose EMA averages over about ``t`` steps."""
    return 1.0 - 1.0 / timesteps


def decay_to_timesteps(decay: float) -> float:
    """``1 / (1 - d)``: inverse of :func:`timesteps_to_decay`."""
    return 1.0 / (1.0 - decay)


def sigmoid_inverse(y: Tensor) -> Tensor:
    """``logit(y)``: inverse of the sigmoid constraint on decays."""
    return torch.logit(y)


def softplus_inverse(y: Tensor) -> Tensor:
    """``log(expm1(y))``: inverse of the softplus constraint on thresholds.

    Computed as ``y + log(-expm1(-y))`` (the same value) so that large ``y`` does not
    overflow ``expm1`` to ``inf``.
    """
    return y + torch.log(-torch.expm1(-y))
