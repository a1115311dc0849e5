"""Hidden states of a whole model: find, zero, detach, snapshot, restore, save and load them.

Every function takes any ``nn.Module`` (a :class:`~tracetorch.core.model.Model` or not) and
reaches every traceTorch :class:`~tracetorch.core.layer.Layer` it holds: registered
submodules, plain lists / tuples / dicts, and attributes of plain Python objects kept on the
model. Each layer gets a dotted path (``net.1``, ``blocks.0.lif``, ``heads.left``) that names
its states (``net.1.mem``). Values are written only through :meth:`Layer.set_state`.
:class:`~tracetorch.core.model.Model`'s methods of the same names call these functions.

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.core import states
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), tt.snn.LIB(3))
    >>> _ = net(torch.rand(2, 4))
    >>> sorted(states.save_states(net))
    ['1.mem']
    >>> snapshot = states.snapshot_states(net)
    >>> states.zero_states(net); net[1].mem is None
    True
    >>> states.restore_states(snapshot); net[1].mem.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.core.layer import Layer
from tracetorch.core.state_io import StateFileError, read_state_file, write_state_file

__all__ = [
    "iter_layers", "zero_states", "detach_states", "snapshot_states", "restore_states", "save_states", "load_states",
    "save_states_file", "load_states_file", "Snapshot", "NONE_STATE",
]

_LEAVES = (Tensor, str, bytes, int, float, bool, type(None), type, Path)
NONE_STATE = torch.empty(0)
"""How :func:`save_states` writes a state that is still ``None`` (an empty 1-d tensor)."""

Snapshot = list[tuple[Layer, str, "Tensor | None"]]


def _is_leaf(obj: Any) -> bool:
    """Values that never hold a layer: tensors, scalars, strings, types, plain callables."""
    return isinstance(obj, _LEAVES) or callable(obj) and not isinstance(obj, nn.Module)


def _children(obj: Any) -> list[tuple[str, Any]]:
    """The named values a walk looks into below ``obj``."""
    if isinstance(obj, nn.Module):
        children: list[tuple[str, Any]] = list(obj._modules.items())
        return children + [(k, v) for k, v in vars(obj).items() if not k.startswith("_") and k != "training"]
    if isinstance(obj, dict):
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    if hasattr(obj, "__dict__") and not isinstance(obj, (torch.optim.Optimizer, torch.device, torch.dtype)):
        return [(k, v) for k, v in vars(obj).items() if not k.startswith("_")]
    return []


def iter_layers(root: Any) -> Iterator[tuple[str, Layer]]:
    """Yield ``(dotted_path, layer)`` for every :class:`Layer` reachable from ``root``, depth first.

    The layers are collected before the first is yielded, so the caller may change states (or the model) while
    iterating.
    """
    seen: set[int] = set()
    found: list[tuple[str, Layer]] = []

    def walk_children(children: list[tuple[str, Any]], path: str) -> None:
        for key, child in children:
            if not _is_leaf(child) and id(child) not in seen:  # checked here: no call for the many leaves
                walk(child, f"{path}.{key}" if path else key)

    def walk(obj: Any, path: str) -> None:
        seen.add(id(obj))
        if isinstance(obj, Layer) and path:
            found.append((path, obj))
        walk_children(_children(obj), path)

    if isinstance(root, Layer):  # a layer's own states are named "", its submodules' by their names
        found.append(("", root))
        seen.add(id(root))
        walk_children(list(root._modules.items()), "")
    else:
        walk_children([("", root)], "")
    yield from found


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def zero_states(model: nn.Module) -> None:
    """Every hidden state back to ``None`` (recreated as zeros on the next call): a new sequence."""
    for _, layer in iter_layers(model):
        layer.zero_states()


def detach_states(model: nn.Module) -> None:
    """Cut the autograd history of every hidden state (truncated BPTT, online learning)."""
    for _, layer in iter_layers(model):
        layer.detach_states()


def snapshot_states(model: nn.Module) -> Snapshot:
    """References to every hidden state, for :func:`restore_states` (cheap: states are replaced, never modified in place)."""
    return [(layer, name, value) for _, layer in iter_layers(model) for name, value in layer.states()]


def restore_states(snapshot: Snapshot) -> None:
    """Put back the states a :func:`snapshot_states` call saw (the same tensors, autograd history included)."""
    for layer, name, value in snapshot:
        layer.set_state(name, value)


def save_states(model: nn.Module) -> dict[str, Tensor]:
    """``{path.state: tensor}`` (detached copies) for every state; a state still ``None`` is :data:`NONE_STATE`."""
    out: dict[str, Tensor] = {}
    for path, layer in iter_layers(model):
        for name, value in layer.states():
            out[_key(path, name)] = NONE_STATE.clone() if value is None else value.detach().clone()
    return out


def load_states(model: nn.Module, states: dict[str, Tensor], strict: bool = True) -> None:
    """Load states saved by :func:`save_states`, checked against ``model``.

    With ``strict`` every state of the model must be present and nothing else; with
    ``strict=False`` unknown keys are ignored and missing states are left as they are.
    Shapes must put ``num_neurons`` at each layer's ``dim``. Tensors move to the
    layer's device. Nothing is changed unless every check passes (``ValueError`` listing every problem).
    """
    slots = {_key(path, name): (layer, name) for path, layer in iter_layers(model) for name in layer.state_names()}
    missing = sorted(set(slots) - set(states))
    unexpected = sorted(set(states) - set(slots))
    problems = []
    if strict and missing:
        problems.append(f"missing states: {', '.join(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected states: {', '.join(unexpected)}")
    updates = []
    first_shape: dict[int, tuple[str, torch.Size]] = {}  # the states of one layer share one shape
    for key in [k for k in slots if k in states]:  # the model's order, whatever the file's
        layer, name = slots[key]
        value = states[key]
        if not isinstance(value, Tensor):
            problems.append(f"{key}: expected a tensor, got {type(value).__name__}")
            continue
        if value.numel() == 0 and value.ndim == 1:
            updates.append((layer, name, None))
            continue
        ok = value.ndim >= 1 and -value.ndim <= layer.dim < value.ndim and value.shape[layer.dim] == layer.num_neurons
        if not ok:
            problems.append(f"{key}: shape {tuple(value.shape)} does not have num_neurons={layer.num_neurons} at dim={layer.dim}")
            continue
        other, shape = first_shape.setdefault(id(layer), (key, value.shape))
        if shape != value.shape:
            problems.append(f"{key}: shape {tuple(value.shape)} differs from {other} of shape {tuple(shape)}")
            continue
        updates.append((layer, name, value.detach().to(_device_of(layer), copy=True)))  # never alias the caller's tensors
    if problems:
        raise ValueError("cannot load states: " + "; ".join(problems))
    for layer, name, value in updates:
        layer.set_state(name, value)


def save_states_file(model: nn.Module, path: str | Path) -> None:
    """Write every state to ``.safetensors`` or ``.pt`` (chosen by suffix), atomically."""
    write_state_file(path, save_states(model))


def load_states_file(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Read a file written by :func:`save_states_file` (never unpickles objects); problems are a :class:`StateFileError`."""
    states = read_state_file(path)
    try:
        load_states(model, states, strict=strict)
    except ValueError as err:
        raise StateFileError(f"{path}: {err}") from None


def _device_of(layer: Layer) -> torch.device:
    for tensor in layer.parameters():
        return tensor.device
    for tensor in layer.buffers():
        return tensor.device
    return torch.device("cpu")
