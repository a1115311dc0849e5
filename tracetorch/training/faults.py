"""Training faults: non-finite losses traced to the first layer that produced them, run-dir write failures.

When a loss turns NaN or inf, :func:`locate_non_finite` replays the offending timesteps
step by step with forward hooks on every submodule and reports the first module (in
call order) whose output holds a non-finite value, and at which timestep; replaying
starts from the hidden states the chunk started from, so the replay is the same
computation. :func:`config_differences` lists the dotted keys where two configs differ
(used to explain why a checkpoint does not fit a run).

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.training.faults import locate_non_finite
    >>> net = tt.Sequential(torch.nn.Linear(3, 4), tt.snn.LIB(4))
    >>> with torch.no_grad():
    ...     net[0].weight[0, 0] = float("nan")
    >>> locate_non_finite(net, torch.ones(5, 2, 3))
    "layer '0' (Linear, output shape [2, 4]) at timestep 0; its parameters weight hold non-finite values"
    >>> from tracetorch.training.faults import config_differences
    >>> config_differences({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 2, "c": [1, 2]}})
    ['a.b: 1 vs 2']
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.core.layer import Layer
from tracetorch.core.states import restore_states, snapshot_states, zero_states

__all__ = ["NonFiniteError", "RunDirError", "locate_non_finite", "snapshot_states", "restore_states", "config_differences"]


class NonFiniteError(RuntimeError):
    """The loss or the gradients became NaN/inf (``trainer.nan_policy=stop``); the message names step and layer."""


class RunDirError(RuntimeError):
    """The run directory cannot be written (disk full, permissions); earlier checkpoints are intact."""


def _label(name: str, module: nn.Module) -> str:
    return f"layer '{name}' ({module._label() if isinstance(module, Layer) else type(module).__name__}"


def _non_finite(value: Any) -> Tensor | None:
    tensors = value if isinstance(value, (tuple, list)) else (value,)
    for tensor in tensors:
        floating = isinstance(tensor, Tensor) and (tensor.is_floating_point() or tensor.is_complex())
        if floating and not torch.isfinite(tensor).all():
            return tensor
    return None


@torch.no_grad()
def locate_non_finite(
    model: nn.Module,
    x_seq: Tensor,
    states: list[tuple[Layer, str, Tensor | None]] | None = None,
    first_step: int = 0,
    autocast: Callable[[], Any] | None = None,
) -> str:
    """Describe where ``model`` first produces a non-finite value over ``x_seq`` (``[T, ...]``).

    ``states``: a :func:`snapshot_states` to start from (default: zero states);
    ``first_step`` numbers the timesteps of ``x_seq``. The model's states are left as
    they were before the call.
    """
    if not torch.isfinite(x_seq).all():
        bad = int((~torch.isfinite(x_seq)).flatten(1).any(1).nonzero()[0])
        return f"the input itself holds non-finite values (first at timestep {first_step + bad})"
    before = snapshot_states(model)
    if states is None:
        zero_states(model)
    else:
        restore_states(states)
    found: list[str] = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        tensor = _non_finite(output) if not found else None
        if tensor is not None:
            found.append(names[id(module)])
            shapes[0] = list(tensor.shape)

    names = {id(m): name for name, m in model.named_modules() if name}
    shapes: list[list[int]] = [[]]
    handles = [m.register_forward_hook(hook) for name, m in model.named_modules() if name]
    t = 0
    try:
        for t, x_t in enumerate(x_seq.unbind(0)):  # noqa: B007 - t is reported below
            with (autocast or nullcontext)():
                out = model(x_t)
            if found or _non_finite(out) is not None:
                break
    finally:
        for handle in handles:
            handle.remove()
        restore_states(before)
    if not found:
        if _non_finite(out) is not None:
            return f"the model's output (no submodule reported it) at timestep {first_step + t}"
        return "every layer's output stayed finite, so the loss computation itself (readout) produced it"
    module = dict(model.named_modules())[found[0]]
    where = f"{_label(found[0], module)}, output shape {shapes[0]}) at timestep {first_step + t}"
    bad = [n for n, p in module.named_parameters(recurse=False) if not torch.isfinite(p).all()]
    bad += [n for n, b in module.named_buffers(recurse=False) if b.is_floating_point() and not torch.isfinite(b).all()]
    return where + (f"; its parameters {', '.join(bad)} hold non-finite values" if bad else "")


def config_differences(a: Any, b: Any, prefix: str = "", limit: int = 5) -> list[str]:
    """``['key.path: a_value vs b_value', ...]`` where two nested configs differ (at most ``limit``)."""
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for key in list(x) + [k for k in y if k not in x]:
                walk(x.get(key, "<absent>"), y.get(key, "<absent>"), f"{path}.{key}" if path else str(key))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif x != y:
            out.append(f"{path or '<root>'}: {x!r} vs {y!r}")

    walk(a, b, prefix)
    return out
