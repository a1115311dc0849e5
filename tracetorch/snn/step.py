"""Pure step functions: one timestep of any of the 32 layers on plain tensors.

``neuron_step(flags, x, state, params, spike_fn, quant_fn) -> (out, new_state)`` is
assembled from four pieces, one per stage of the layer reference (``docs/layers.md``):

1. :func:`drive`       ``u`` from the input (synaptic trace when ``S``)
2. :func:`recurrence`  ``delta`` from ``u`` and the recurrent trace (``R``)
3. :func:`membrane`    leaky (or EMA) integration of ``delta``
4. :func:`fire`        threshold, quantize, reset, scale (``LIB`` / ``LIT`` / ``LITS``)

``state`` maps the names of :func:`tracetorch.snn.grammar.state_names` to tensors
(``None`` means zeros); ``params`` maps parameter names to *activated* values already
broadcastable against ``x``. Nothing here touches ``nn.Module``.

Example:
    >>> import torch
    >>> from tracetorch.snn.grammar import parse
    >>> from tracetorch.snn.step import neuron_step
    >>> flags = parse("LI")
    >>> out, state = neuron_step(flags, torch.ones(2), {"mem": None}, {"beta": torch.tensor(0.5)})
    >>> out, state = neuron_step(flags, torch.ones(2), state, {"beta": torch.tensor(0.5)})
    >>> out
    tensor([1.5000, 1.5000])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from tracetorch.functional import sigmoid4x
from tracetorch.snn.grammar import Flags

__all__ = ["pos", "neg", "drive", "recurrence", "membrane", "fire", "neuron_step"]

State = dict[str, Tensor]
Params = Mapping[str, Tensor]
Fn = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


def pos(v: Tensor) -> Tensor:
    """``where(v >= 0, v, 0)``."""
    return torch.where(v >= 0, v, torch.zeros_like(v))


def neg(v: Tensor) -> Tensor:
    """``where(v <= 0, v, 0)``."""
    return torch.where(v <= 0, v, torch.zeros_like(v))


def _ema(decay: Tensor, trace: Tensor | None, x: Tensor) -> Tensor:
    """``decay * trace + (1 - decay) * x`` with ``None`` read as zeros."""
    trace = torch.zeros_like(x) if trace is None else trace
    return decay * trace + (1 - decay) * x


def drive(flags: Flags, x: Tensor, state: Mapping[str, Tensor | None], p: Params, new: State) -> Tensor:
    """Step 1: ``u = x``, or the synaptic trace(s) of ``x`` (written into ``new``)."""
    if not flags.synaptic:
        return x
    if not flags.dual:
        new["syn"] = _ema(p["alpha"], state["syn"], x)
        return new["syn"]
    new["pos_syn"] = _ema(p["pos_alpha"], state["pos_syn"], pos(x))
    new["neg_syn"] = _ema(p["neg_alpha"], state["neg_syn"], neg(x))
    return new["pos_syn"] + new["neg_syn"]


def recurrence(
    flags: Flags, u: Tensor, state: Mapping[str, Tensor | None], p: Params, new: State
) -> tuple[Tensor, Tensor | None]:
    """Step 2: ``delta`` (dual: ``(pos_delta, neg_delta)``; otherwise ``(delta, None)``)."""
    if flags.recurrent:
        prev = state["prev_output"]
        prev = torch.zeros_like(u) if prev is None else prev
        if not flags.dual:
            new["rec"] = _ema(p["gamma"], state["rec"], prev)
            return p["rec_weight"] * new["rec"] + u, None
        new["pos_rec"] = _ema(p["pos_gamma"], state["pos_rec"], pos(prev))
        new["neg_rec"] = _ema(p["neg_gamma"], state["neg_rec"], neg(prev))
        rec = new["pos_rec"] + new["neg_rec"]
        return p["pos_rec_weight"] * pos(rec) + pos(u), p["neg_rec_weight"] * neg(rec) + neg(u)
    if flags.dual:
        return pos(u), neg(u)
    return u, None


def _integrate(flags: Flags, decay: Tensor, mem: Tensor | None, delta: Tensor) -> Tensor:
    mem = torch.zeros_like(delta) if mem is None else mem
    return decay * mem + ((1 - decay) * delta if flags.ema else delta)


def membrane(
    flags: Flags, delta: tuple[Tensor, Tensor | None], state: Mapping[str, Tensor | None], p: Params, new: State
) -> Tensor:
    """Step 3: leaky (``LIEMA``: EMA) integration; returns the membrane value ``mem``."""
    if not flags.dual:
        new["mem"] = _integrate(flags, p["beta"], state["mem"], delta[0])
        return new["mem"]
    assert delta[1] is not None
    new["pos_mem"] = _integrate(flags, p["pos_beta"], state["pos_mem"], delta[0])
    new["neg_mem"] = _integrate(flags, p["neg_beta"], state["neg_mem"], delta[1])
    return new["pos_mem"] + new["neg_mem"]


def _reset(flags: Flags, new: State, amount: Tensor) -> None:
    if flags.dual:
        new["pos_mem"] = new["pos_mem"] - 0.5 * amount
        new["neg_mem"] = new["neg_mem"] - 0.5 * amount
    else:
        new["mem"] = new["mem"] - amount


def fire(flags: Flags, mem: Tensor, p: Params, new: State, spike_fn: Fn, quant_fn: Fn) -> Tensor:
    """Step 4: output of the family, with the subtractive reset applied to ``new``."""
    if not flags.fires:
        return mem
    if flags.family == "LIB":
        s = quant_fn(spike_fn(mem - p["threshold"] + p["bias"]))
        _reset(flags, new, s * p["threshold"])
        return s
    s_pos = quant_fn(spike_fn(mem - p["pos_threshold"] + p["bias"]))
    s_neg = -quant_fn(spike_fn(-p["neg_threshold"] - mem - p["bias"]))
    _reset(flags, new, s_pos * p["pos_threshold"] + s_neg * p["neg_threshold"])
    if flags.family == "LITS":
        return p["pos_scale"] * s_pos + p["neg_scale"] * s_neg
    return s_pos + s_neg


def neuron_step(
    flags: Flags,
    x: Tensor,
    state: Mapping[str, Tensor | None],
    params: Params,
    spike_fn: Fn = sigmoid4x,
    quant_fn: Fn | None = None,
) -> tuple[Tensor, State]:
    """One timestep of the layer described by ``flags``; returns ``(out, new_state)``."""
    new: State = {}
    u = drive(flags, x, state, params, new)
    delta = recurrence(flags, u, state, params, new)
    mem = membrane(flags, delta, state, params, new)
    out = fire(flags, mem, params, new, spike_fn, quant_fn if quant_fn is not None else _identity)
    if flags.recurrent:
        new["prev_output"] = out
    return out, new
