"""The plain-PyTorch sequence path: the exact reference every fused kernel is tested against.

``run_reference(run, x_seq, uniforms)`` is a loop of the layer's step function
(:func:`tracetorch.snn.step.neuron_step`, handed over in a :class:`~tracetorch.kernels.neuron_run.NeuronRun`)
over the ``T`` timesteps of ``x_seq`` ``[T, *step_shape]``, starting from the layer's held
states; it returns the stacked outputs and the final states. It is what ``T`` calls of
``layer(x_t)`` compute, and it is also the fallback for anything the fused kernels do not
cover (a user-written ``spike_fn`` / ``quant_fn``, half precision, no compiler).

Randomness of the stochastic quantizers in sequence mode
--------------------------------------------------------
``stochastic_round_ste`` and ``probabilistic_ste`` draw Bernoulli numbers. In sequence mode
all uniforms are drawn up front by :func:`draw_uniforms` as one tensor
``torch.rand(T, draws, *step_shape)`` (``draws`` = 1 for ``LIB``, 2 for ``LIT``/``LITS``:
the positive event, then the negative one), and a Bernoulli draw of probability ``p`` is
``u < p``. The fused kernels and this reference consume the same tensor, so given the same
RNG state they give the same spikes exactly (up to the float rounding of ``p`` itself).
Step mode draws with ``torch.bernoulli`` at each call: it has the same distribution but not
the same samples; :func:`replay_quant` turns a quantizer into one that reads given uniforms,
which makes step mode reproduce sequence mode exactly (the tests do this).

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.kernels.reference import run_reference
    >>> x_seq = torch.ones(2, 1, 3)
    >>> out, states = run_reference(tt.snn.LI(3, beta=0.5).neuron_run(x_seq), x_seq)
    >>> out[:, 0, 0].detach()
    tensor([1.0000, 1.5000])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.functional import ProbabilisticSTE, RoundSTE, StochasticRoundSTE
from tracetorch.kernels.neuron_run import NeuronRun

__all__ = ["quant_kind", "draws_per_step", "draw_uniforms", "replay_quant", "run_reference"]

_KINDS: dict[type, str] = {
    nn.Identity: "identity",
    RoundSTE: "round",
    StochasticRoundSTE: "stochastic_round",
    ProbabilisticSTE: "probabilistic",
}
STOCHASTIC = ("stochastic_round", "probabilistic")


def quant_kind(quant_fn: Callable[[Tensor], Tensor]) -> str | None:
    """``'identity'``, ``'round'``, ``'stochastic_round'``, ``'probabilistic'`` or ``None`` (unknown)."""
    return _KINDS.get(type(quant_fn))


def draws_per_step(flags: Any) -> int:
    """How many quantizer calls (random draws) one timestep of this layer makes."""
    if not flags.fires:
        return 0
    return 1 if flags.family == "LIB" else 2


def draw_uniforms(flags: Any, quant_fn: Callable[[Tensor], Tensor], x_seq: Tensor) -> Tensor | None:
    """``torch.rand(T, draws, *step_shape)`` for a stochastic quantizer, else ``None``."""
    if not flags.fires or quant_kind(quant_fn) not in STOCHASTIC:
        return None
    return torch.rand((x_seq.shape[0], draws_per_step(flags), *x_seq.shape[1:]), dtype=x_seq.dtype, device=x_seq.device)


class _ReplayProbabilistic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, u: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * (u < x.detach().clamp(0.0, 1.0)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * 2.0 * x, None


def _replay_one(quant_fn: Callable[[Tensor], Tensor], u: Tensor) -> Callable[[Tensor], Tensor]:
    kind = quant_kind(quant_fn)
    if kind == "probabilistic":
        return lambda x: _ReplayProbabilistic.apply(x, u)
    if kind == "stochastic_round":
        step = quant_fn.step_size  # type: ignore[union-attr]

        def stochastic_round(x: Tensor) -> Tensor:
            scaled = x.detach() / step
            low = torch.floor(scaled)
            q = (low + (u < scaled - low).to(x.dtype)) * step
            return x + (q - x).detach()

        return stochastic_round
    return quant_fn


def replay_quant(quant_fn: Callable[[Tensor], Tensor], uniforms_t: Tensor | None) -> Callable[[Tensor], Tensor]:
    """``quant_fn`` for one timestep, reading ``uniforms_t`` ``[draws, *step_shape]`` in call order.

    Deterministic quantizers (and ``uniforms_t=None``) are returned unchanged.
    """
    if uniforms_t is None or quant_kind(quant_fn) not in STOCHASTIC:
        return quant_fn
    calls = iter([_replay_one(quant_fn, u) for u in uniforms_t.unbind(0)])
    return lambda x: next(calls)(x)


def run_reference(run: NeuronRun, x_seq: Tensor, uniforms: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """``T`` steps of the layer's dynamics from its held states: ``(outputs [T, ...], final states)``.

    Nothing is written anywhere; ``uniforms`` (from :func:`draw_uniforms`) drive the
    stochastic quantizers when given.
    """
    state: dict[str, Tensor | None] = dict(run.states)
    outs = []
    for t, x_t in enumerate(x_seq.unbind(0)):
        quant = replay_quant(run.quant_fn, None if uniforms is None else uniforms[t])
        out, new = run.step(x_t, state, run.params, run.spike_fn, quant)
        state.update(new)
        outs.append(out)
    return torch.stack(outs), {k: v for k, v in state.items() if v is not None}
