"""Helpers shared by the compiled-kernel tests."""

from __future__ import annotations

from collections.abc import Callable

import torch


def kernels_called(fn: Callable[[], object]) -> set[str]:
    """The names of the ``tracetorch_kernels`` ops that ``fn()`` runs, from ``torch.profiler``."""
    with torch.profiler.profile() as prof:
        fn()
    return {e.key.removeprefix("tracetorch_kernels::") for e in prof.key_averages() if "tracetorch_kernels" in e.key}
