"""Event-driven ``Conv2d`` on spike inputs: the output and the weight gradient from the input's ones.

When the input of a ``Conv2d`` holds only zeros and ones, each output is the bias plus the
weights whose input fired, and the weight gradient is a sum over the input's ones (events) of
the output-gradient entries whose window covers them:

    out[b, :, y, x] = bias + sum_{(c, i, j) : x[b, c, y s + i d - p, x s + j d - p] = 1} W[:, c, i, j]
    grad W[:, c, i, j] = sum_{(b, c, y, x) : x[b, c, y, x] = 1} grad_out[b, :, (y + p - i d) / s, (x + p - j d) / s]

(terms kept where the positions are in range and the quotients whole), so both cost about
``nnz * kernel taps * out_channels`` additions instead of a dense correlation over every
input position; the compiled ``event_conv2d_forward`` and ``event_conv2d_grad_weight``
kernels do these sums. Where few taps reach each output (a first layer on one channel), direct
stride-1 kernels (``conv2d_direct_forward``, ``conv2d_direct_grad_weight``: rows of the input
times each tap, in 8-lane vectors) do less work than the events; :func:`conv_plan` picks, by a
cost estimate, the events, the direct kernels or torch's dense convolution for the output, and
the events or the direct kernel for the weight gradient. The input gradient stays dense
(``torch.nn.grad.conv2d_input``), and only the index of the ones (or, for the direct weight
gradient, the input) is saved for backward.

:func:`conv2d` checks the input in one pass (``binary_rows``); an input with any other value
or a density above :data:`~tracetorch.kernels.event_linear.MAX_DENSITY` takes the direct
kernels where the plan says they beat torch's, else ``module(x)``; grouped or string-padded or
non-zero-padded convolutions, a dtype other than float32, a non-CPU tensor, autocast or no
compiled kernel take ``module(x)`` (the same values, to float summation order).
``tt.Sequential.run`` uses it for every plain ``nn.Conv2d`` it folds over time; :func:`explain`
says which path a call takes.

Example:
    >>> import torch
    >>> from tracetorch.kernels.event_conv import conv2d
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    >>> x = (torch.rand(8, 2, 16, 16) < 0.2).float()
    >>> torch.allclose(conv2d(conv, x), conv(x), atol=1e-6)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from tracetorch.kernels import cpu, dispatch
from tracetorch.kernels.event_linear import MAX_DENSITY, MIN_ELEMENTS, unsupported_tensors

__all__ = ["conv2d", "explain", "conv_plan", "ConvPlan"]

# Nanoseconds per unit of work, fitted on this project's 2-core AVX2 machine with benchmarks/
# conv shapes: in the event forward, listing a (one, tap) pair, adding its weight row per 8 output
# channels, and an output position's fixed cost (least squares over 12 -> 8 and 12 -> 64 5x5, 16 -> 32
# and 32 -> 64 3x3 padded, 5-30% ones); an 8-lane multiply-add of the direct kernels; a multiply-add
# and an output value of torch's dense convolution (oneDNN; the second dominates with one input
# channel: 1 -> 12 channels 5x5 on [640, 1, 28, 28] took 8.7 ms, 1 -> 32 3x3 padded 82 ms).
EVENT_PAIR_NS = 2.6
EVENT_ROW_NS = 0.5
EVENT_POSITION_NS = 46.0
# The event weight gradient: a weight row of 8 channels updated per (one, tap) pair, and an output
# position's cost (its gradient transposed and summed for the bias); 12 -> 64 5x5, 5-50% ones.
EVENT_GRAD_ROW_NS = 0.9
EVENT_GRAD_POSITION_NS = 120.0
DIRECT_VECTOR_NS = 0.5
DENSE_MAC_NS = 0.025
DENSE_OUTPUT_NS = 1.3


@dataclass(frozen=True)
class ConvPlan:
    """How a conv2d on spikes runs: ``forward`` in ``"events" | "direct" | "dense"``, ``weight_grad`` in
    ``"events" | "direct"``; the cheapest by the cost estimate of :func:`conv_plan`."""

    forward: str
    weight_grad: str


def conv_plan(weight_shape: tuple[int, ...], in_shape: tuple[int, ...], geometry: tuple[tuple[int, int], ...],
              ones: int | None) -> ConvPlan:
    """The estimated fastest kernels for a conv2d of ``weight_shape`` on ``in_shape`` with ``ones`` ones.

    ``ones=None``: the input is not a spike tensor, so no event kernel can take it.

    Events: every one reaches about ``kh * kw * (output / input positions)`` outputs, each listed and
    then adding ``ceil(out_channels / 8)`` vectors (for the weight gradient, updating them), plus a
    fixed cost per output position. Direct (stride 1, dilation
    1, kernel width <= 8): one 8-lane multiply-add per (output row chunk of 8, input channel, tap). Dense
    (forward only): one multiply-add per (output, input channel, tap), plus a cost per output value.

    Example:
        >>> conv_plan((64, 12, 5, 5), (640, 12, 12, 12), ((1, 1), (0, 0), (1, 1)), ones=66_000)
        ConvPlan(forward='events', weight_grad='events')
        >>> conv_plan((12, 1, 5, 5), (640, 1, 28, 28), ((1, 1), (0, 0), (1, 1)), ones=65_000)
        ConvPlan(forward='direct', weight_grad='direct')
    """
    out_channels, in_channels, kh, kw = weight_shape
    stride, padding, dilation = geometry
    oh, ow = ((n + 2 * p - d * (k - 1) - 1) // s + 1
              for n, k, s, p, d in zip(in_shape[2:], (kh, kw), stride, padding, dilation))
    positions, vectors = in_shape[0] * oh * ow, -(-out_channels // 8)
    events = events_grad = math.inf
    if ones is not None:
        pairs = ones * kh * kw * (oh * ow) / (in_shape[2] * in_shape[3])
        events = (EVENT_PAIR_NS + EVENT_ROW_NS * vectors) * pairs + EVENT_POSITION_NS * positions
        events_grad = EVENT_GRAD_ROW_NS * vectors * pairs + EVENT_GRAD_POSITION_NS * positions
    dense = (DENSE_MAC_NS * in_channels * kh * kw + DENSE_OUTPUT_NS) * positions * out_channels
    direct = None
    if stride == (1, 1) and dilation == (1, 1) and kw <= 8:
        direct = DIRECT_VECTOR_NS * in_shape[0] * oh * -(-ow // 8) * out_channels * in_channels * kh * kw
    costs = {"events": events, "dense": dense} | ({} if direct is None else {"direct": direct})
    forward = min(costs, key=costs.__getitem__)
    weight_grad = "direct" if direct is not None and direct < events_grad else "events"
    return ConvPlan(forward, weight_grad)


class _EventConv2d(torch.autograd.Function):
    """``conv2d`` on spikes with the kernels :func:`conv_plan` picks; saves the index of the ones (or the input)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, indptr: Tensor,  # type: ignore[override]
                indices: Tensor, geometry: tuple[tuple[int, int], ...], plan: ConvPlan) -> Tensor:
        stride, padding, dilation = geometry
        w, b = weight.detach().contiguous(), weight.new_empty(0) if bias is None else bias.detach().contiguous()
        if plan.forward == "events":
            out = cpu.load().event_conv2d_forward(indptr, indices, w, b, list(x.shape[2:]), list(stride),
                                                  list(padding), list(dilation))
        elif plan.forward == "direct":
            out = cpu.load().conv2d_direct_forward(x.detach(), w, b, list(padding))
        else:
            out = F.conv2d(x, weight, bias, stride, padding, dilation)
        saved = (x.detach(),) if plan.weight_grad == "direct" else (indptr, indices)
        ctx.save_for_backward(weight, *saved)
        ctx.geometry, ctx.in_shape, ctx.has_bias, ctx.plan = geometry, x.shape, bias is not None, plan
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        weight, *saved = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(ctx.in_shape, weight, grad_out, stride, padding, dilation)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            out_channels, in_channels, kh, kw = weight.shape
            if ctx.plan.weight_grad == "direct":
                grad_w, grad_b = cpu.load().conv2d_direct_grad_weight(saved[0], grad_out.contiguous(), [kh, kw],
                                                                      list(padding))
            else:
                taps, grad_b = cpu.load().event_conv2d_grad_weight(*saved, grad_out.contiguous(), in_channels,
                                                                   list(ctx.in_shape[2:]), [kh, kw], list(stride),
                                                                   list(padding), list(dilation))
                grad_w = taps.view(in_channels, kh, kw, out_channels).permute(3, 0, 1, 2).contiguous()
        return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None, None, None


def explain(module: nn.Conv2d, x: Tensor) -> tuple[str, str]:
    """``("events" | "dense", reason)``: the path :func:`conv2d` would try for ``module`` on ``x``.

    ``"events"``: the compiled kernels :func:`conv_plan` picks (the event ones only when the values of
    ``x`` are all 0/1 and at most half ones); torch's ``module(x)`` when the plan for a graded input
    has nothing better.
    """
    if dispatch.wanted() == "reference":
        return "dense", "forced"
    if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
        return "dense", "grouped, string-padded or non-zero-padded convolution"
    why = unsupported_tensors([x, module.weight] + ([] if module.bias is None else [module.bias]))
    if why is not None:
        return "dense", why
    if x.ndim != 4 or x.shape[1] != module.in_channels:
        return "dense", "shapes for torch's own checks"
    if x.numel() < MIN_ELEMENTS:
        return "dense", f"fewer than {MIN_ELEMENTS} input elements"
    if not cpu.available():
        return "dense", "compiled C++ kernel unavailable"
    return "events", "compiled C++ kernels (events if x is 0/1 and at most half ones, else direct if cheaper)"


def conv2d(module: nn.Conv2d, x: Tensor) -> Tensor:
    """``module(x)`` for a batch ``x [B, C, H, W]`` with the kernels :func:`conv_plan` picks (events on spikes)."""
    if explain(module, x)[0] != "events":
        return module(x)
    x = x.contiguous()
    indptr, indices = cpu.load().binary_rows(x.detach().view(x.shape[0], -1), MAX_DENSITY)
    geometry = (tuple(module.stride), tuple(module.padding), tuple(module.dilation))
    ones = indices.numel() if indptr.numel() else None  # one index per one
    plan = conv_plan(tuple(module.weight.shape), tuple(x.shape), geometry, ones)
    if ones is None and plan != ConvPlan("direct", "direct"):
        return module(x)
    return _EventConv2d.apply(x, module.weight, module.bias, indptr, indices, geometry, plan)
