"""Event-driven ``Linear`` on spike inputs: cost proportional to the number of spikes.

When the input of a ``Linear`` holds only zeros and ones (spikes, rate-coded pixels), the
product ``x W^T`` is a sum of the weight columns of the inputs that fired:

    out[r] = b + sum_{k : x[r, k] = 1} W[:, k]        grad W[:, k] = sum_{r : x[r, k] = 1} grad_out[r]

so forward and weight gradient cost ``nnz * out_features`` additions instead of
``rows * in_features * out_features`` multiply-adds (about 8x fewer for rate-coded MNIST,
13% of pixels firing per step). :func:`linear` checks the input in one pass (the compiled
``binary_rows`` kernel builds the index of the ones while checking); any other value, a
density above :data:`MAX_DENSITY`, a dtype other than float32, a non-CPU tensor or no
compiled kernel sends the call to ``torch.nn.functional.linear`` (same values, to float
summation order). The input gradient is the dense ``grad_out @ W`` either way.

``tt.Sequential.run`` (and :func:`tracetorch.kernels.sequence.run`) use it for every ``nn.Linear``
they fold over time; :func:`explain` says which path a call takes.

Example:
    >>> import torch
    >>> from tracetorch.kernels.event_linear import linear
    >>> fc = torch.nn.Linear(6, 3)
    >>> x = (torch.rand(40, 6) < 0.2).float()
    >>> torch.allclose(linear(x, fc.weight, fc.bias), fc(x), atol=1e-6)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from tracetorch.kernels import cpu, dispatch

__all__ = ["MAX_DENSITY", "MIN_ELEMENTS", "linear", "explain", "unsupported_tensors"]

MAX_DENSITY = 0.5
"""Inputs with a larger fraction of ones take the dense path."""
MIN_ELEMENTS = 4096
"""Smaller inputs take the dense path (the index would cost more than it saves)."""


class _EventLinear(torch.autograd.Function):
    """``x W^T + b`` from the index of the ones of ``x``; saves the index and ``W``, not ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, indptr: Tensor,  # type: ignore[override]
                indices: Tensor) -> Tensor:
        out = cpu.load().event_linear_forward(indptr, indices, weight.detach().contiguous(),
                                              weight.new_empty(0) if bias is None else bias.detach().contiguous())
        ctx.save_for_backward(weight, indptr, indices)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        weight, indptr, indices = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight
        if ctx.needs_input_grad[1]:
            grad_w = cpu.load().event_linear_grad_weight(indptr, indices, grad_out, weight.shape[1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, grad_b, None, None


def unsupported_tensors(tensors: list[Tensor]) -> str | None:
    """Why the event kernels cannot take these tensors (dtype, device, autocast), or ``None``."""
    if any(t.dtype != torch.float32 for t in tensors):
        return "dtype other than float32"
    if any(t.device.type != "cpu" for t in tensors):
        return "not a CPU tensor"
    if torch.is_autocast_enabled("cpu"):
        return "autocast (torch picks the precision)"
    return None


def explain(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> tuple[str, str]:
    """``("events" | "dense", reason)``: the path :func:`linear` would try for these arguments.

    ``"events"`` still falls back to dense when the values of ``x`` are not all 0/1 or are too dense.
    """
    if dispatch.wanted() == "reference":
        return "dense", "forced"
    why = unsupported_tensors([x, weight] + ([] if bias is None else [bias]))
    if why is not None:
        return "dense", why
    if x.ndim < 2 or x.shape[-1] != weight.shape[-1] or weight.ndim != 2:
        return "dense", "shapes for torch's own checks"
    if x.numel() < MIN_ELEMENTS:
        return "dense", f"fewer than {MIN_ELEMENTS} input elements"
    if not cpu.available():
        return "dense", "compiled C++ kernel unavailable"
    return "events", "compiled C++ kernel, if x is 0/1 and at most half ones"


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``torch.nn.functional.linear(x, weight, bias)``, event-driven when ``x`` is a spike tensor."""
    if explain(x, weight, bias)[0] != "events":
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    indptr, indices = cpu.load().binary_rows(rows.detach(), MAX_DENSITY)
    if indptr.numel() == 0:
        return F.linear(x, weight, bias)
    out = _EventLinear.apply(rows, weight, bias, indptr, indices)
    return out.view(*x.shape[:-1], weight.shape[0])
