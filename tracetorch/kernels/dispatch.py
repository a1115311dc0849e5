"""Choosing the path of a neuron layer's sequence run: Triton (CUDA), compiled C++ (CPU) or reference.

``run_sequence(layer, x_seq)`` is what ``NeuronLayer.run`` calls. The fused paths cover every
one of the 32 layers with the default ``spike_fn`` (:func:`tracetorch.functional.sigmoid4x`)
and the quantizers ``nn.Identity``, ``round_ste``, ``stochastic_round_ste`` and
``probabilistic_ste`` (exact types), in float32. Anything else (a user-written ``spike_fn``
or ``quant_fn``, float64 or half precision, no compiler, no Triton) runs the reference
path, a loop of :func:`tracetorch.snn.step.neuron_step`. :func:`explain` says which path a
call would take and why; :func:`force` pins a path (tests, debugging).

All paths start from the layer's held states (``None`` = zeros) and leave the final states in
the layer, connected to the autograd graph exactly as ``T`` single steps would.

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.kernels import dispatch
    >>> layer = tt.snn.LIB(4)
    >>> dispatch.explain(layer, torch.rand(10, 2, 4))[0] in ("cpu", "reference")
    True
    >>> with dispatch.force("reference"):
    ...     layer.run(torch.rand(10, 2, 4)).shape
    torch.Size([10, 2, 4])
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch
from torch import Tensor

from tracetorch.functional import sigmoid4x
from tracetorch.kernels import cpu
from tracetorch.kernels.fused import fused_run
from tracetorch.kernels.reference import draw_uniforms, quant_kind, run_reference

__all__ = ["PATHS", "wanted", "explain", "select_path", "force", "run_sequence", "triton_available"]

PATHS = ("triton", "cpu", "reference")
_forced: list[str] = []


@contextmanager
def force(path: str) -> Iterator[None]:
    """Within the block, use ``path`` (one of :data:`PATHS`) wherever it is possible, else the reference."""
    if path not in PATHS:
        raise ValueError(f"unknown kernel path {path!r}; choose one of {', '.join(PATHS)}")
    _forced.append(path)
    try:
        yield
    finally:
        _forced.pop()


@cache
def triton_available() -> bool:
    """True when Triton can be imported and a CUDA device is present."""
    return torch.cuda.is_available() and importlib.util.find_spec("triton") is not None


def _unsupported(layer: torch.nn.Module, x_seq: Tensor) -> str | None:
    if x_seq.dtype != torch.float32:
        return f"dtype {x_seq.dtype} (the fused kernels take float32)"
    if layer.flags.fires:
        if layer.spike_fn is not sigmoid4x:
            return f"custom spike_fn {getattr(layer.spike_fn, '__name__', type(layer.spike_fn).__name__)}"
        if quant_kind(layer.quant_fn) is None:
            return f"custom quant_fn {type(layer.quant_fn).__name__}"
    return None


def wanted() -> str:
    """The path asked for: the innermost :func:`force`, else ``$TRACETORCH_KERNELS``, else ``"auto"``."""
    return _forced[-1] if _forced else os.environ.get("TRACETORCH_KERNELS", "auto")


def explain(layer: torch.nn.Module, x_seq: Tensor) -> tuple[str, str]:
    """``(path, reason)``: the path ``layer.run(x_seq)`` takes and why."""
    asked = wanted()
    if asked == "reference":
        return "reference", "forced"
    why = _unsupported(layer, x_seq)
    if why is not None:
        return "reference", why
    if x_seq.is_cuda:
        if asked in ("auto", "triton") and triton_available():
            return "triton", "CUDA input, Triton available"
        return "reference", "CUDA input without Triton"
    if x_seq.device.type == "cpu":
        if asked in ("auto", "cpu") and cpu.available():
            return "cpu", "compiled C++ kernel"
        return "reference", "compiled C++ kernel unavailable"
    return "reference", f"device {x_seq.device.type}"


def select_path(layer: torch.nn.Module, x_seq: Tensor) -> str:
    """The path :func:`run_sequence` takes for ``layer`` and ``x_seq`` (see :data:`PATHS`)."""
    return explain(layer, x_seq)[0]


def _check(layer: torch.nn.Module, x_seq: Tensor) -> Tensor:
    if not isinstance(x_seq, Tensor):
        raise TypeError(f"{layer._label()}.run: expected a torch.Tensor of shape [T, ...], got {type(x_seq).__name__}")
    if x_seq.ndim < 2 or x_seq.shape[0] == 0:
        raise ValueError(
            f"{layer._label()}.run: expected a sequence [T, *input_shape] with T >= 1, got shape {tuple(x_seq.shape)}"
        )
    if not (x_seq.is_floating_point() or x_seq.is_complex()):
        x_seq = x_seq.to(torch.get_default_dtype())
    layer.check_input(x_seq[0])
    return x_seq


def run_sequence(layer: torch.nn.Module, x_seq: Tensor) -> Tensor:
    """Run ``layer`` over ``x_seq`` ``[T, *input_shape]``; returns ``[T, ...]`` and updates the states."""
    x_seq = _check(layer, x_seq)
    uniforms = draw_uniforms(layer.flags, layer.quant_fn, x_seq)
    path = select_path(layer, x_seq)
    if path == "cpu":
        backend = cpu.CpuBackend(cpu.load())
        out, states = fused_run(layer, x_seq, uniforms, backend, quant_kind(layer.quant_fn) or "identity")
    elif path == "triton":
        from tracetorch.kernels.triton_kernels import TritonBackend

        out, states = fused_run(layer, x_seq, uniforms, TritonBackend(), quant_kind(layer.quant_fn) or "identity")
    else:
        out, states = run_reference(layer, x_seq, uniforms)
    for name, value in states.items():
        object.__setattr__(layer, name, value)
    return out
