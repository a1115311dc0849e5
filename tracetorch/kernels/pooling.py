"""Max pooling of ``[B, C, H, W]`` planes on the CPU with a one-byte argmax.

``torch.nn.functional.max_pool2d`` on contiguous (NCHW) CPU tensors keeps an int64 index per
output and was the slowest op after the convolutions in a conv SNN (a quarter of the
forward pass here). :func:`max_pool2d` computes the same values and gradients with the
compiled ``max_pool2d_planes`` kernel: each output's maximum and its position in the window
(one byte), ties and NaNs resolved as torch does (a later value wins when greater or NaN),
and a backward pass that adds each output gradient at its maximum.

It covers ``nn.MaxPool2d`` without padding, dilation, ``ceil_mode`` or ``return_indices``, on
float32 CPU input; anything else (or no compiled kernel, or autocast) takes ``module(x)``.
``tt.Sequential.run`` uses it for every plain ``nn.MaxPool2d`` it folds over time;
:func:`explain` says which path a call takes.

Example:
    >>> import torch
    >>> from tracetorch.kernels.pooling import max_pool2d
    >>> pool = torch.nn.MaxPool2d(2)
    >>> x = torch.rand(4, 3, 8, 8)
    >>> torch.equal(max_pool2d(pool, x), pool(x))
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair

from tracetorch.kernels import cpu, dispatch

__all__ = ["max_pool2d", "explain"]


class _MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> Tensor:  # type: ignore[override]
        batch, channels, height, width = x.shape
        out, arg = cpu.load().max_pool2d_planes(x.view(batch * channels, height, width), list(kernel), list(stride))
        ctx.save_for_backward(arg)
        ctx.geometry = (batch, channels, height, width, kernel, stride)
        return out.view(batch, channels, *out.shape[1:])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        (arg,) = ctx.saved_tensors
        batch, channels, height, width, kernel, stride = ctx.geometry
        grad = grad_out.contiguous().view(arg.shape)
        grad_x = cpu.load().max_pool2d_planes_backward(grad, arg, height, width, list(kernel), list(stride))
        return grad_x.view(batch, channels, height, width), None, None


def explain(module: nn.MaxPool2d, x: Tensor) -> tuple[str, str]:
    """``("compiled" | "torch", reason)``: the path :func:`max_pool2d` takes for ``module`` on ``x``."""
    if dispatch.wanted() == "reference":
        return "torch", "forced"
    if _pair(module.padding) != (0, 0) or _pair(module.dilation) != (1, 1) or module.ceil_mode or module.return_indices:
        return "torch", "padding, dilation, ceil_mode or return_indices"
    kernel = _pair(module.kernel_size)
    if kernel[0] * kernel[1] > 256:
        return "torch", "more than 256 taps per window"
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.ndim != 4:
        return "torch", "not a 4-d float32 CPU tensor"
    if torch.is_autocast_enabled("cpu"):
        return "torch", "autocast (torch picks the precision)"
    if x.shape[2] < kernel[0] or x.shape[3] < kernel[1]:
        return "torch", "input smaller than the window (torch's own error)"
    if not cpu.available():
        return "torch", "compiled C++ kernel unavailable"
    return "compiled", "compiled C++ kernel"


def max_pool2d(module: nn.MaxPool2d, x: Tensor) -> Tensor:
    """``module(x)`` for ``x [B, C, H, W]``, with the compiled kernel where :func:`explain` allows it."""
    if explain(module, x)[0] != "compiled":
        return module(x)
    kernel, stride = _pair(module.kernel_size), _pair(module.stride if module.stride is not None else module.kernel_size)
    return _MaxPool2d.apply(x.contiguous(), kernel, stride)
