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
summation order). Denser spikes (a hidden layer firing 30-50% of the time) and few
``out_features`` make torch's matrix products the cheaper choice: :func:`linear_plan` picks
the events or the dense product for the output and for the weight gradient separately, by a
cost estimate. The input gradient is the dense ``grad_out @ W`` either way.

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

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from tracetorch.kernels import cpu, dispatch

__all__ = ["MAX_DENSITY", "MIN_ELEMENTS", "linear", "linear_plan", "LinearPlan", "explain", "unsupported_tensors"]

MAX_DENSITY = 0.5
"""Inputs with a larger fraction of ones take the dense path."""
MIN_ELEMENTS = 4096
"""Smaller inputs take the dense path (the index would cost more than it saves)."""

# Nanoseconds per unit of work, fitted by ``python benchmarks/linear_plan_fit.py`` on this project's
# 2-core AVX2 machine ([2000, K] inputs, K = 128, 784, 1024; out_features 10, 128 and 512; 5-47% ones;
# every kernel in the same run, least squares of the relative error): the event kernels' cost per
# one and per 8-lane vector of out_features it adds, for the output and the weight gradient;
# torch's dense product (MKL) per (row, in_feature) pair and per multiply-add.
EVENT_ONE_NS = 0.17
EVENT_VECTOR_NS = 0.18
EVENT_GRAD_ONE_NS = 1.3
EVENT_GRAD_VECTOR_NS = 0.26
DENSE_INPUT_NS = 0.28
DENSE_MAC_NS = 0.0101


@dataclass(frozen=True)
class LinearPlan:
    """How a Linear on spikes runs: ``forward`` and ``weight_grad`` each ``"events" | "dense"``, the cheaper
    by the cost estimate of :func:`linear_plan`."""

    forward: str
    weight_grad: str


def linear_plan(rows: int, in_features: int, out_features: int, ones: int) -> LinearPlan:
    """The estimated faster kernels for a Linear on ``rows`` spike rows holding ``ones`` ones.

    Events: a fixed cost per one plus one vector add per 8 output features; dense: torch's product over
    every (row, input) pair. The index of the ones is built either way (it is the check of the input).

    Example:
        >>> linear_plan(2000, 784, 128, ones=280_000)  # rate-coded MNIST, 18% ones
        LinearPlan(forward='events', weight_grad='events')
        >>> linear_plan(2000, 128, 128, ones=120_000)  # a hidden layer firing 47% of the time
        LinearPlan(forward='events', weight_grad='dense')
        >>> linear_plan(2000, 128, 10, ones=60_000)    # 10 outputs: MKL's product wins the gradient
        LinearPlan(forward='events', weight_grad='dense')
    """
    vectors = -(-out_features // 8)
    dense = rows * in_features * (DENSE_INPUT_NS + DENSE_MAC_NS * out_features)
    forward = ones * (EVENT_ONE_NS + EVENT_VECTOR_NS * vectors)
    weight_grad = ones * (EVENT_GRAD_ONE_NS + EVENT_GRAD_VECTOR_NS * vectors)
    return LinearPlan("events" if forward < dense else "dense", "events" if weight_grad < dense else "dense")


class _EventLinear(torch.autograd.Function):
    """``x W^T + b`` with the kernels :func:`linear_plan` picks; saves the index of the ones (or ``x`` for a
    dense weight gradient) and ``W``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, indptr: Tensor,  # type: ignore[override]
                indices: Tensor, plan: LinearPlan) -> Tensor:
        if plan.forward == "events":
            out = cpu.load().event_linear_forward(indptr, indices, weight.detach().contiguous(),
                                                  weight.new_empty(0) if bias is None else bias.detach().contiguous())
        else:
            out = F.linear(x, weight, bias)
        saved = (x.detach(),) if plan.weight_grad == "dense" else (indptr, indices)
        ctx.save_for_backward(weight, *saved)
        ctx.has_bias, ctx.plan = bias is not None, plan
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        weight, *saved = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ weight
        if ctx.needs_input_grad[1]:
            grad_w = grad_out.t() @ saved[0] if ctx.plan.weight_grad == "dense" else \
                cpu.load().event_linear_grad_weight(*saved, grad_out, weight.shape[1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_x, grad_w, grad_b, None, None, None


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
    return "events", "compiled C++ kernels, if x is 0/1 and at most half ones and linear_plan finds them cheaper"


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``torch.nn.functional.linear(x, weight, bias)``, event-driven when ``x`` is a spike tensor."""
    if explain(x, weight, bias)[0] != "events":
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    indptr, indices = cpu.load().binary_rows(rows.detach(), MAX_DENSITY)
    if indptr.numel() == 0:
        return F.linear(x, weight, bias)
    plan = linear_plan(rows.shape[0], rows.shape[1], weight.shape[0], indices.numel())  # one index per one
    if plan == LinearPlan("dense", "dense"):
        return F.linear(x, weight, bias)
    out = _EventLinear.apply(rows, weight, bias, indptr, indices, plan)
    return out.view(*x.shape[:-1], weight.shape[0])
