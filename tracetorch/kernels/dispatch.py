"""Choosing the path of a neuron layer's sequence run: Triton (CUDA), compiled C++ (CPU) or reference.

``run_sequence(run, x_seq)`` is what ``NeuronLayer.run`` calls with its
:class:`~tracetorch.kernels.neuron_run.NeuronRun` (flags and tensors, not the module); it returns
``(outputs, final states)`` and the layer writes the states. The fused paths cover every
one of the 32 layers with the default ``spike_fn`` (:func:`tracetorch.functional.sigmoid4x`)
and the quantizers ``nn.Identity``, ``round_ste``, ``stochastic_round_ste`` and
``probabilistic_ste`` (exact types), in float32. Anything else (a user-written ``spike_fn``
or ``quant_fn``, float64 or half precision, no compiler, no Triton) runs the reference
path, a loop of :func:`tracetorch.snn.step.neuron_step`. :func:`explain` says which path a
call would take and why; :func:`force` pins a path (tests, debugging).

``run_sequence(run, x_seq, pool)`` also max-pools the outputs with ``pool`` (an ``nn.MaxPool2d``),
as ``tt.Sequential.run`` asks for a neuron layer followed by one: on the compiled C++ path the
kernel pools each block of planes as it computes it (:func:`explain_pooled`), so the unpooled
outputs never reach memory; otherwise the layer runs and the pooling folds over time as usual.

All paths start from the layer's held states (``None`` = zeros) and return final states
connected to the autograd graph exactly as ``T`` single steps would leave them. The compiled
C++ backend (:mod:`~tracetorch.kernels.cpu`) and the Triton one are imported on first use, so
importing traceTorch or building a model never loads a compiler toolchain.

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

import importlib
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from tracetorch.functional import sigmoid4x
from tracetorch.kernels import sequence
from tracetorch.kernels.fused import fused_run
from tracetorch.kernels.neuron_run import NeuronRun
from tracetorch.kernels.reference import draw_uniforms, quant_kind, run_reference

__all__ = ["PATHS", "wanted", "explain", "explain_pooled", "select_path", "force", "run_sequence", "triton_available",
           "cpu_backend"]

PLANE_LIMIT = 1024
"""The most elements of one ``[H, W]`` plane the fused pooling takes (a kernel block, ``BLK`` in ``neuron_kernels.h``)."""

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


def cpu_backend() -> ModuleType:
    """:mod:`tracetorch.kernels.cpu` (the C++ loader), imported here on first use."""
    return importlib.import_module("tracetorch.kernels.cpu")


def _unsupported(layer: Any, x_seq: Tensor) -> str | None:
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


def explain(layer: Any, x_seq: Tensor) -> tuple[str, str]:
    """``(path, reason)``: the path ``layer.run(x_seq)`` takes and why.

    ``layer`` is a neuron layer or its :class:`NeuronRun`: only ``flags``, ``spike_fn`` and ``quant_fn`` are read.
    """
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
        if asked in ("auto", "cpu") and cpu_backend().available():
            return "cpu", "compiled C++ kernel"
        return "reference", "compiled C++ kernel unavailable"
    return "reference", f"device {x_seq.device.type}"


def select_path(layer: Any, x_seq: Tensor) -> str:
    """The path :func:`run_sequence` takes for ``layer`` and ``x_seq`` (see :data:`PATHS`)."""
    return explain(layer, x_seq)[0]


def explain_pooled(layer: Any, x_seq: Tensor, pool: nn.MaxPool2d) -> tuple[bool, str]:
    """``(fused, reason)``: whether :func:`run_sequence` pools ``layer``'s outputs with ``pool`` inside the C++ kernel.

    It does for ``x_seq`` ``[T, B, C, H, W]`` when the layer takes the compiled C++ path, ``pool`` the compiled pooling
    (:func:`tracetorch.kernels.pooling.explain`) and one ``[H, W]`` plane holds at most :data:`PLANE_LIMIT` elements.
    """
    from tracetorch.kernels import pooling

    if x_seq.ndim != 5:
        return False, f"input of {x_seq.ndim} dimensions (the fused pooling takes [T, B, C, H, W])"
    path, why = explain(layer, x_seq)
    if path != "cpu":
        return False, f"the layer takes the {path} path ({why})"
    compiled, why = pooling.explain(pool, x_seq[0])
    if compiled != "compiled":
        return False, f"the pooling takes torch's path ({why})"
    if x_seq.shape[-2] * x_seq.shape[-1] > PLANE_LIMIT:
        return False, f"planes of {x_seq.shape[-2]} x {x_seq.shape[-1]} (at most {PLANE_LIMIT} elements)"
    return True, "compiled C++ kernel, pooled as it runs"


def run_sequence(run: NeuronRun, x_seq: Tensor, pool: nn.MaxPool2d | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Run a layer's sequence ``x_seq`` ``[T, *input_shape]`` (checked by the layer): ``(outputs [T, ...], final states)``.

    With ``pool``: the outputs max-pooled by it, fused into the kernel where :func:`explain_pooled` allows.
    """
    if pool is not None:
        if explain_pooled(run, x_seq, pool)[0]:
            cpu = cpu_backend()
            window = (*_pair(pool.kernel_size), *_pair(pool.stride if pool.stride is not None else pool.kernel_size))
            return fused_run(run, x_seq, draw_uniforms(run.flags, run.quant_fn, x_seq), cpu.CpuBackend(cpu.load()),
                             quant_kind(run.quant_fn) or "identity", pool=window)
        out, states = run_sequence(run, x_seq)
        return sequence.run(pool, out), states
    uniforms = draw_uniforms(run.flags, run.quant_fn, x_seq)
    path = select_path(run, x_seq)
    if path == "cpu":
        cpu = cpu_backend()
        return fused_run(run, x_seq, uniforms, cpu.CpuBackend(cpu.load()), quant_kind(run.quant_fn) or "identity")
    if path == "triton":
        from tracetorch.kernels.triton_kernels import TritonBackend

        return fused_run(run, x_seq, uniforms, TritonBackend(), quant_kind(run.quant_fn) or "identity")
    return run_reference(run, x_seq, uniforms)
