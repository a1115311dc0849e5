"""The compiled CPU backend: the neuron kernels and ``events_cpu.cpp`` (float32), built on first use.

The neuron kernels are templates (``neuron_kernels.h``) instantiated in four parts
(``neuron_{forward,backward}_{single,dual}.cpp``) and called by the ops in ``neuron_cpu.cpp``.
``torch.utils.cpp_extension`` compiles the sources in parallel (ninja) into one library
that registers its ops under ``torch.ops.tracetorch_kernels``: ``neuron_forward`` /
``neuron_backward`` (the fused neuron sequences) and ``binary_rows``, ``event_linear_forward``,
``event_linear_grad_weight``, ``bernoulli_spikes`` (event-driven ops)
(``TORCH_LIBRARY``, which needs only light ATen headers: the build takes a fraction of a
``torch/extension.h`` one). The build happens once per machine and is cached by PyTorch (``TORCH_EXTENSIONS_DIR``,
default ``~/.cache/torch_extensions``); later imports only load the shared library. When no
C++ compiler is available (or the build fails) :func:`load` returns ``None`` and logs one
warning; the sequence mode then uses the plain-PyTorch reference path.

Example:
    >>> from tracetorch.kernels import cpu
    >>> cpu.available() in (True, False)
    True
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tracetorch.kernels.fused import Meta

__all__ = ["load", "available", "release_pool", "CpuBackend", "SOURCES", "HEADERS"]

log = logging.getLogger("tracetorch.kernels")
FALLBACK = "neuron sequences, event-driven Linear and spike draws use the slower plain PyTorch paths"
_HERE = Path(__file__).parent
# the longest compiles first, so that the parallel build ends together
SOURCES = tuple(_HERE / name for name in ("neuron_backward_dual.cpp", "neuron_backward_single.cpp",
                                          "neuron_forward_dual.cpp", "neuron_forward_single.cpp", "events_cpu.cpp",
                                          "neuron_cpu.cpp"))
HEADERS = (_HERE / "neuron_kernels.h", _HERE / "tensor_pool.h")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _build_flags() -> tuple[str, list[str]]:
    """(extension name, compiler flags) for this CPU: AVX-512 and AVX2/FMA builds get their own cache entries."""
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= _cpu_flags():
        return "tracetorch_neuron_cpu_avx512", [*flags, "-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw",
                                                "-mavx512vl", "-mprefer-vector-width=512"]
    if {"avx2", "fma"} <= _cpu_flags():
        return "tracetorch_neuron_cpu_avx2", [*flags, "-mavx2", "-mfma"]
    return "tracetorch_neuron_cpu", flags


def _pool_limit_mib() -> int:
    """``$TRACETORCH_CPU_POOL_MB`` (default 2048): the most MiB of freed output buffers kept for reuse."""
    value = os.environ.get("TRACETORCH_CPU_POOL_MB")
    if value is None:
        return 2048
    if not value.strip().isdigit():
        raise ValueError(f"TRACETORCH_CPU_POOL_MB must be a whole number of MiB (0 turns the buffer pool off), got {value!r}")
    return min(int(value), 1 << 30)  # 1 PiB: more than any machine, and still a 64-bit byte count


def _is_built(name: str) -> bool:
    """Whether PyTorch's extension cache already holds the library ``name`` (then loading takes a second)."""
    from torch.utils import cpp_extension

    build_directory = getattr(cpp_extension, "_get_build_directory", None)
    return build_directory is not None and (Path(build_directory(name, False)) / f"{name}.so").exists()


@cache
def load() -> Any | None:
    """The compiled kernel's ops (``torch.ops.tracetorch_kernels``), built on first use; ``None`` if impossible.

    Raises:
        ValueError: when ``$TRACETORCH_CPU_POOL_MB`` is set to something other than a whole number.
    """
    pool_limit = _pool_limit_mib()
    if os.environ.get("TRACETORCH_NO_CPP"):
        log.warning("traceTorch: TRACETORCH_NO_CPP is set; %s", FALLBACK)
        return None
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        log.warning("traceTorch: no C++ compiler (%s) found; %s", compiler, FALLBACK)
        return None
    venv_bin = Path(sys.executable).parent
    if shutil.which("ninja") is None and (venv_bin / "ninja").exists():  # the ninja wheel of an unactivated venv
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        quiet = logging.getLogger("torch.utils.cpp_extension")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # its import warns about CUDA_HOME, irrelevant to a CPU build
        try:
            from torch.utils.cpp_extension import load as build
        finally:
            quiet.setLevel(level)

        name, cflags = _build_flags()
        if not _is_built(name):
            log.info("traceTorch: building the C++ kernels, once per machine (about 2 minutes on 2 cores)")
        # torch rebuilds when a source or a flag changes, not a header: put the headers' hash in a flag
        digest = hashlib.sha1(b"".join(header.read_bytes() for header in HEADERS)).hexdigest()[:12]
        cflags = [*cflags, f"-DTRACETORCH_HEADERS={digest}"]
        build(name=name, sources=[str(source) for source in SOURCES], extra_cflags=cflags, extra_ldflags=["-fopenmp"],
              is_python_module=False, verbose=False)
        torch.ops.tracetorch_kernels.pool_set_limit(pool_limit)
        return torch.ops.tracetorch_kernels
    except Exception as err:  # noqa: BLE001 - any build failure means: use the reference path
        log.warning("traceTorch: building the C++ kernels failed (%s); %s",
                    str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__, FALLBACK)
        return None


def release_pool() -> int:
    """Free the output buffers the compiled kernels keep for reuse; returns the bytes given back (0 without them).

    The pool holds at most ``$TRACETORCH_CPU_POOL_MB`` MiB (default 2048, ``0`` = no pool).
    """
    ops = load()
    return 0 if ops is None else int(ops.pool_release())


def available() -> bool:
    """True when the compiled kernel can be used (builds it on first call)."""
    return load() is not None


class CpuBackend:
    """:class:`tracetorch.kernels.fused.Backend` running the compiled neuron kernels (``neuron_kernels.h``)."""

    def __init__(self, ops: Any) -> None:
        self.ops = ops

    def forward(self, x: Tensor, params: Tensor, init: Tensor, uniforms: Tensor | None, meta: Meta,
                save: bool) -> tuple[Tensor, Tensor, Tensor]:
        d, s, r, f, q = meta.codes
        u = uniforms if uniforms is not None else x.new_empty(0)
        out, final, saved = self.ops.neuron_forward(x, params.contiguous(), init.contiguous(), u, d, s, r, f, q, meta.step,
                                                meta.num_neurons, meta.inner, save)
        return out, final, saved

    def backward(self, grad_out: Tensor, grad_final: Tensor, x: Tensor | None, params: Tensor, init: Tensor,
                 uniforms: Tensor | None, saved: Tensor, meta: Meta) -> tuple[Tensor, Tensor, Tensor]:
        d, s, r, f, q = meta.codes
        empty = params.new_empty(0)
        gx, gp, gi = self.ops.neuron_backward(grad_out, grad_final, empty if x is None else x, params.contiguous(),
                                          init.contiguous(), empty if uniforms is None else uniforms, saved, d, s, r, f,
                                          q, meta.step, meta.num_neurons, meta.inner)
        return gx, gp, gi
