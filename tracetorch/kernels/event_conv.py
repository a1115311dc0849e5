"""Event-driven ``Conv2d`` on spike inputs: the output and the weight gradient from the input's ones.

When the input of a ``Conv2d`` holds only zeros and ones, each output is the bias plus the
weights whose input fired, and the weight gradient is a sum over the input's ones (events) of
the output-gradient entries whose window covers them:

    out[b, :, y, x] = bias + sum_{(c, i, j) : x[b, c, y s + i d - p, x s + j d - p] = 1} W[:, c, i, j]
    grad W[:, c, i, j] = sum_{(b, c, y, x) : x[b, c, y, x] = 1} grad_out[b, :, (y + p - i d) / s, (x + p - j d) / s]

(terms kept where the positions are in range and the quotients whole), so both cost about
``nnz * kernel taps * out_channels`` additions instead of a dense correlation over every
input position; the compiled ``event_conv2d_forward`` and ``event_conv2d_grad_weight``
kernels do these sums. The weight gradient always comes from the events; the output only when
:func:`events_pay` estimates them cheaper than torch's dense convolution (few ones, many input
channels: the second layer of a conv SNN, not a one-channel first layer). The input gradient
stays dense (``torch.nn.grad.conv2d_input``), and only the index of the ones is saved for
backward, not the input.

:func:`conv2d` checks the input in one pass (``binary_rows``); any other value, a density
above :data:`~tracetorch.kernels.event_linear.MAX_DENSITY`, grouped or string-padded or
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

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from tracetorch.kernels import cpu, dispatch
from tracetorch.kernels.event_linear import MAX_DENSITY, MIN_ELEMENTS, unsupported_tensors

__all__ = ["conv2d", "explain", "events_pay"]

# Nanoseconds per unit of work, fitted on this project's 2-core AVX2 machine (benchmarks/README):
# one 8-channel weight row added for one (one, tap) pair, one output position's fixed cost in the
# event kernel, and one multiply-add of torch's dense convolution.
EVENT_ROW_NS = 1.1
EVENT_POSITION_NS = 27.0
DENSE_MAC_NS = 0.025


def events_pay(weight_shape: tuple[int, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...], ones: int) -> bool:
    """Whether the event-driven output of a conv2d is estimated faster than torch's dense one.

    Event cost: every one reaches about ``kh * kw * (output positions / input positions)`` outputs, each
    adding ``ceil(out_channels / 8)`` vectors, plus a fixed cost per output position; dense cost: one
    multiply-add per (output, input channel, tap).

    Example:
        >>> events_pay((64, 12, 5, 5), (640, 12, 12, 12), (640, 64, 8, 8), ones=66_000)
        True
        >>> events_pay((12, 1, 5, 5), (640, 1, 28, 28), (640, 12, 24, 24), ones=65_000)
        False
    """
    out_channels, in_channels, kh, kw = weight_shape
    positions, in_positions = out_shape[0] * out_shape[2] * out_shape[3], in_shape[2] * in_shape[3]
    pairs = ones * kh * kw * (out_shape[2] * out_shape[3]) / in_positions
    event_ns = EVENT_ROW_NS * pairs * -(-out_channels // 8) + EVENT_POSITION_NS * positions
    return event_ns < DENSE_MAC_NS * positions * out_channels * in_channels * kh * kw


class _EventConv2d(torch.autograd.Function):
    """``conv2d`` whose output and weight gradient come from the index of the input's ones."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, indptr: Tensor,  # type: ignore[override]
                indices: Tensor, geometry: tuple[tuple[int, int], ...]) -> Tensor:
        stride, padding, dilation = geometry
        sizes = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)]
        if events_pay(tuple(weight.shape), tuple(x.shape), (x.shape[0], weight.shape[0], *sizes), int(indptr[-1])):
            out = cpu.load().event_conv2d_forward(indptr, indices, weight.detach().contiguous(),
                                                  weight.new_empty(0) if bias is None else bias.detach().contiguous(),
                                                  list(x.shape[2:]), list(stride), list(padding), list(dilation))
        else:
            out = F.conv2d(x, weight, bias, stride, padding, dilation)
        ctx.save_for_backward(weight, indptr, indices)
        ctx.geometry, ctx.in_shape, ctx.has_bias = geometry, x.shape, bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        weight, indptr, indices = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(ctx.in_shape, weight, grad_out, stride, padding, dilation)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            out_channels, in_channels, kh, kw = weight.shape
            taps, grad_b = cpu.load().event_conv2d_grad_weight(indptr, indices, grad_out.contiguous(), in_channels,
                                                               list(ctx.in_shape[2:]), [kh, kw], list(stride),
                                                               list(padding), list(dilation))
            grad_w = taps.view(in_channels, kh, kw, out_channels).permute(3, 0, 1, 2).contiguous()
        return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None, None


def explain(module: nn.Conv2d, x: Tensor) -> tuple[str, str]:
    """``("events" | "dense", reason)``: the path :func:`conv2d` would try for ``module`` on ``x``.

    ``"events"`` still falls back to dense when the values of ``x`` are not all 0/1 or are too dense.
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
    return "events", "compiled C++ kernel, if x is 0/1 and at most half ones"


def conv2d(module: nn.Conv2d, x: Tensor) -> Tensor:
    """``module(x)`` for a batch ``x [B, C, H, W]``, event-driven (output and weight gradient) when ``x`` is a spike tensor."""
    if explain(module, x)[0] != "events":
        return module(x)
    x = x.contiguous()
    indptr, indices = cpu.load().binary_rows(x.detach().view(x.shape[0], -1), MAX_DENSITY)
    if indptr.numel() == 0:
        return module(x)
    geometry = (tuple(module.stride), tuple(module.padding), tuple(module.dilation))
    return _EventConv2d.apply(x, module.weight, module.bias, indptr, indices, geometry)
