"""The compiled CPU backend: the neuron kernels and ``events_cpu.cpp`` (float32), built on first use.

The neuron kernels are templates (``neuron_kernels.h``) instantiated in four parts
(``neuron_{forward,backward}_{single,dual}.cpp``) and called by the ops in ``neuron_cpu.cpp``.
``torch.utils.cpp_extension`` compiles the sources in parallel (ninja) into one library
that registers its ops under ``torch.ops.tracetorch_kernels``: ``neuron_forward`` /
``neuron_backward`` (the fused neuron sequences) and ``binary_rows``, ``event_linear_forward``,
``event_linear_grad_weight``, ``bernoulli_spikes`` (event-driven ops)
(``TORCH_LIBRARY``, which needs only light ATen headers: the build takes a fraction of a
``torch/extension.h`` one).

The build cache: each build lives in ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions/<python>_<accelerator>``) under ``tracetorch_kernels_<cpu>_<key>``,
where ``<key>`` (:func:`cache_key`) hashes the sources' and headers' contents, the torch and
Python versions and the compiler flags, never their path: two clones or venvs with the same
sources share one build, different sources get their own, and several builds coexist. The
sources are copied into the build directory (``src/``) and compiled from there. Every build
is announced (INFO on the ``tracetorch.kernels`` logger, or stderr when the program set up no
logging) with its directory, and reports its progress (parts done, elapsed time) while it runs;
``python -m tracetorch.kernels build`` builds ahead of time. When no C++ compiler is available
(or the build fails) :func:`load` returns ``None`` and logs one warning; the sequence mode
then uses the plain-PyTorch reference path.

Example:
    >>> from tracetorch.kernels import cpu
    >>> cpu.available() in (True, False)
    True
    >>> plan = cpu.build_plan()
    >>> plan.directory.name == f"tracetorch_kernels_{plan.variant}_{plan.key}"
    True
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tracetorch.kernels.fused import Meta

__all__ = ["load", "available", "release_pool", "CpuBackend", "SOURCES", "HEADERS", "BuildPlan", "build_plan", "cache_key",
           "extensions_root"]

log = logging.getLogger("tracetorch.kernels")
FALLBACK = "neuron sequences, event-driven Linear and spike draws use the slower plain PyTorch paths"
PREFIX = "tracetorch_kernels"
BUILD_TIME = "about 2 minutes on 2 cores"
PROGRESS_SECONDS = 10.0
_HERE = Path(__file__).parent
# the longest compiles first, so that the parallel build ends together
SOURCES = tuple(_HERE / name for name in ("neuron_backward_dual.cpp", "neuron_backward_single.cpp",
                                          "neuron_forward_dual.cpp", "neuron_forward_single.cpp", "events_cpu.cpp",
                                          "neuron_cpu.cpp"))
HEADERS = (_HERE / "neuron_kernels.h", _HERE / "pool_planes.h", _HERE / "tensor_pool.h")
LDFLAGS = ("-fopenmp",)


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
    """(CPU variant, compiler flags) for this CPU: AVX-512 and AVX2/FMA builds get their own cache entries."""
    flags = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= _cpu_flags():
        return "avx512", [*flags, "-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl",
                          "-mprefer-vector-width=512"]
    if {"avx2", "fma"} <= _cpu_flags():
        return "avx2", [*flags, "-mavx2", "-mfma"]
    return "generic", flags


def cache_key(sources: Sequence[str | Path], flags: Sequence[str]) -> str:
    """16 hex digits naming one build: the files' names and contents, torch and Python versions, compiler and flags.

    The files' directories do not count, so identical sources in two clones share one build.

    Example:
        >>> from tracetorch.kernels.cpu import SOURCES, HEADERS, cache_key
        >>> key = cache_key([*SOURCES, *HEADERS], ["-O3"])
        >>> len(key), key == cache_key([*SOURCES, *HEADERS], ["-O3"]), key == cache_key([*SOURCES, *HEADERS], ["-O2"])
        (16, True, False)
    """
    digest = hashlib.sha256()
    for source in sources:
        path = Path(source)
        content = path.read_bytes()
        digest.update(f"{path.name}\0{len(content)}\0".encode())
        digest.update(content)
    versions = (torch.__version__, f"py{sys.version_info.major}.{sys.version_info.minor}", os.environ.get("CXX", "c++"))
    digest.update("\0".join([*versions, *flags, *LDFLAGS]).encode())
    return digest.hexdigest()[:16]


def _cpp_extension() -> Any:
    """``torch.utils.cpp_extension``, imported without its warning about CUDA_HOME (irrelevant to a CPU build)."""
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)
    return cpp_extension


def extensions_root() -> Path:
    """PyTorch's extension cache: ``$TORCH_EXTENSIONS_DIR``, else its per-Python, per-accelerator default folder."""
    cpp_extension = _cpp_extension()
    build_directory = getattr(cpp_extension, "_get_build_directory", None)
    if build_directory is None:  # not in this torch version: the documented default
        return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())
    return Path(build_directory("", False))


@dataclass(frozen=True)
class BuildPlan:
    """One build of the kernels: its CPU variant, flags, cache key and directory."""

    variant: str
    cflags: tuple[str, ...]
    key: str
    root: Path
    sources: tuple[Path, ...] = SOURCES
    headers: tuple[Path, ...] = HEADERS

    @property
    def name(self) -> str:
        return f"{PREFIX}_{self.variant}_{self.key}"

    @property
    def directory(self) -> Path:
        return self.root / self.name

    @property
    def library(self) -> Path:
        return self.directory / f"{self.name}.so"

    @property
    def built(self) -> bool:
        """Whether the library is in the cache (then loading it takes a second)."""
        return self.library.is_file()

    @property
    def parts(self) -> int:
        """Compile steps of a build: one object file per source, then the link."""
        return len(self.sources) + 1

    def parts_done(self) -> int:
        objects = sum((self.directory / f"{source.stem}.o").is_file() for source in self.sources)
        return objects + self.built

    def others(self) -> list[Path]:
        """The other cached builds of this CPU variant (other sources, torch versions or flags)."""
        return sorted(path for path in self.root.glob(f"{PREFIX}_{self.variant}_*")
                      if path != self.directory and (path / f"{path.name}.so").is_file())

    def stage(self) -> list[str]:
        """Copy the sources and headers into ``<directory>/src`` (only the missing ones); returns the sources to compile."""
        staged = self.directory / "src"
        staged.mkdir(parents=True, exist_ok=True)
        for path in (*self.sources, *self.headers):
            target = staged / path.name
            if not target.is_file():  # an existing copy has this key's content; rewriting it would make ninja rebuild
                partial = staged / f".{path.name}.{os.getpid()}.tmp"
                shutil.copyfile(path, partial)
                os.replace(partial, target)
        return [str(staged / source.name) for source in self.sources]


def build_plan(sources: Sequence[Path] | None = None, headers: Sequence[Path] | None = None) -> BuildPlan:
    """The build this machine needs (of :data:`SOURCES` and :data:`HEADERS` unless given): CPU variant and flags from
    ``/proc/cpuinfo``, key from :func:`cache_key`, directory in :func:`extensions_root`."""
    variant, cflags = _build_flags()
    sources = SOURCES if sources is None else sources
    headers = HEADERS if headers is None else headers
    return BuildPlan(variant, tuple(cflags), cache_key([*sources, *headers], cflags), extensions_root(), tuple(sources),
                     tuple(headers))


def say(message: str) -> None:
    """Report build news: INFO on ``tracetorch.kernels``, or stderr when the program configured no logging at all."""
    if log.hasHandlers():
        log.info(message)
    else:
        print(message, file=sys.stderr, flush=True)


def announce(plan: BuildPlan) -> None:
    """The line every build starts with: where it goes and why."""
    others = plan.others()
    why = (f"; the sources, torch version or flags differ from the {len(others)} other cached build(s)" if others
           else "")
    say(f"traceTorch: building the C++ kernels ({BUILD_TIME}) in {plan.directory}{why}")


def build_with_progress(build: Callable[[], object], plan: BuildPlan, interval: float | None = None) -> None:
    """Run ``build`` in a thread; every ``interval`` seconds (:data:`PROGRESS_SECONDS`) report the parts done and the
    time taken so far."""
    interval = PROGRESS_SECONDS if interval is None else interval
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tracetorch-build") as pool:
        future = pool.submit(build)
        while True:
            try:
                future.result(timeout=interval)
                break
            except concurrent.futures.TimeoutError:
                say(f"traceTorch: building the C++ kernels: {plan.parts_done()}/{plan.parts} parts done, "
                    f"{time.monotonic() - started:.0f} s")
    say(f"traceTorch: built the C++ kernels in {time.monotonic() - started:.0f} s")


def _pool_limit_mib() -> int:
    """``$TRACETORCH_CPU_POOL_MB`` (default 2048): the most MiB of freed output buffers kept for reuse."""
    value = os.environ.get("TRACETORCH_CPU_POOL_MB")
    if value is None:
        return 2048
    if not value.strip().isdigit():
        raise ValueError(f"TRACETORCH_CPU_POOL_MB must be a whole number of MiB (0 turns the buffer pool off), got {value!r}")
    return min(int(value), 1 << 30)  # 1 PiB: more than any machine, and still a 64-bit byte count


def unavailable_reason() -> str | None:
    """Why the kernels cannot be built here (no compiler, ``TRACETORCH_NO_CPP``), or ``None``."""
    if os.environ.get("TRACETORCH_NO_CPP"):
        return "TRACETORCH_NO_CPP is set"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) found"
    return None


@contextmanager
def _builder_lock(directory: Path) -> Iterator[None]:
    """One builder per cache entry, by an ``fcntl`` lock that dies with its process.

    torch's own marker (``<entry>/lock``, a plain file) outlives a build that was killed
    (Ctrl-C during the first build), and every later build would wait for it forever;
    holding this lock proves no live process is building, so the marker is removed.
    """
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".tracetorch-build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)
        yield


def _build_and_load(plan: BuildPlan) -> None:
    """Build ``plan`` (announced, with progress) unless cached, and load it into this process."""
    torch_load = _cpp_extension().load
    built = plan.built
    sources = plan.stage()

    def build() -> object:
        with _builder_lock(plan.directory):
            return torch_load(name=plan.name, sources=sources, extra_cflags=list(plan.cflags),
                              extra_ldflags=list(LDFLAGS), build_directory=str(plan.directory), is_python_module=False,
                              verbose=False)

    if built:
        build()  # ninja finds everything up to date; torch loads the library
    else:
        announce(plan)
        build_with_progress(build, plan)


_loaded_library: Path | None = None
"""The kernel library this process has loaded: torch aborts on a second build of the same ops."""


@cache
def load() -> Any | None:
    """The compiled kernel's ops (``torch.ops.tracetorch_kernels``), built on first use; ``None`` if impossible.

    Raises:
        ValueError: when ``$TRACETORCH_CPU_POOL_MB`` is set to something other than a whole number.
    """
    pool_limit = _pool_limit_mib()
    reason = unavailable_reason()
    if reason is not None:
        log.warning("traceTorch: %s; %s", reason, FALLBACK)
        return None
    venv_bin = Path(sys.executable).parent
    if shutil.which("ninja") is None and (venv_bin / "ninja").exists():  # the ninja wheel of an unactivated venv
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        global _loaded_library
        plan = build_plan()
        if _loaded_library in (None, plan.library):
            _build_and_load(plan)
            _loaded_library = plan.library
        else:
            log.warning("traceTorch: the kernel sources changed after this process loaded %s; it keeps that build "
                        "(one process cannot load two): restart Python to use %s", _loaded_library.parent.name, plan.name)
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

    def forward(self, x: Tensor, params: Tensor, init: Tensor | None, uniforms: Tensor | None, meta: Meta,
                save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        d, s, r, f, q = meta.codes
        empty = x.new_empty(0)
        out, final, saved, arg = self.ops.neuron_forward(x, params.contiguous(), _or(init, empty), _or(uniforms, empty),
                                                         d, s, r, f, q, meta.step, meta.num_neurons, meta.inner, save,
                                                         list(meta.pool))
        return out, final, saved, arg if meta.pool else None

    def backward(self, grad_out: Tensor, grad_final: Tensor | None, x: Tensor | None, params: Tensor,
                 init: Tensor | None, uniforms: Tensor | None, saved: Tensor, meta: Meta,
                 init_grad: bool, param_grad: bool, pool_arg: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        d, s, r, f, q = meta.codes
        empty = params.new_empty(0)
        gx, gp, gi = self.ops.neuron_backward(grad_out, _or(grad_final, empty), _or(x, empty), params.contiguous(),
                                              _or(init, empty), _or(uniforms, empty), saved, d, s, r, f, q, meta.step,
                                              meta.num_neurons, meta.inner, init_grad and init is not None, param_grad,
                                              _or(pool_arg, empty), list(meta.pool))
        return gx, gp, gi

    def slots(self, meta: Meta) -> tuple[int, int]:
        """The kernel's bit masks of the parameter and state slots this layer kind reads (bit k: slot k)."""
        d, s, r, f, _ = meta.codes
        params, states = self.ops.neuron_slots(d, s, r, f)
        return params, states


def _or(tensor: Tensor | None, empty: Tensor) -> Tensor:
    """``tensor`` made contiguous, or ``empty`` (the kernels' "none": zeros) when it is ``None``."""
    return empty if tensor is None else tensor.contiguous()
