"""``tt.Model``: finds every traceTorch layer a model holds and manages their states.

Layers are found anywhere: registered submodules, plain lists / tuples / dicts, and
attributes of plain Python objects kept on the model. Each layer gets a dotted path
(``net.1``, ``blocks.0.lif``, ``heads.left``) that names its states in
:meth:`Model.save_states` (``net.1.mem``).

Example:
    >>> import torch, tracetorch as tt
    >>> class Net(tt.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = torch.nn.Linear(4, 3)
    ...         self.lif = tt.snn.LIB(3)
    ...     def forward(self, x):
    ...         return self.lif(self.fc(x))
    >>> net = Net(); _ = net(torch.rand(2, 4))
    >>> sorted(net.save_states())
    ['lif.mem']
    >>> net.zero_states(); net.lif.mem is None
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.core.layer import Layer
from tracetorch.core.state_io import StateFileError, read_state_file, write_state_file

__all__ = ["Model", "Sequential", "iter_layers", "StateFileError"]

_LEAVES = (Tensor, str, bytes, int, float, bool, type(None), type, Path)
NONE_STATE = torch.empty(0)


def iter_layers(root: Any) -> Iterator[tuple[str, Layer]]:
    """Yield ``(dotted_path, layer)`` for every :class:`Layer` reachable from ``root``."""
    seen: set[int] = set()

    def walk(obj: Any, path: str) -> Iterator[tuple[str, Layer]]:
        if isinstance(obj, _LEAVES) or callable(obj) and not isinstance(obj, nn.Module) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Layer) and path:
            yield path, obj
        if isinstance(obj, nn.Module):
            children: list[tuple[str, Any]] = list(obj._modules.items())
            children += [(k, v) for k, v in vars(obj).items() if not k.startswith("_") and k != "training"]
        elif isinstance(obj, dict):
            children = [(str(k), v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            children = [(str(i), v) for i, v in enumerate(obj)]
        elif hasattr(obj, "__dict__") and not isinstance(obj, (torch.optim.Optimizer, torch.device, torch.dtype)):
            children = [(k, v) for k, v in vars(obj).items() if not k.startswith("_")]
        else:
            return
        for key, child in children:
            yield from walk(child, f"{path}.{key}" if path else key)

    if isinstance(root, Layer):
        yield "", root
        seen.add(id(root))
        for key, child in root._modules.items():
            yield from walk(child, key)
        return
    yield from walk(root, "")


class Model(nn.Module):
    """Base class for models: bulk state management and compile / decompile."""

    def layers(self) -> dict[str, Layer]:
        """Every traceTorch layer in the model, by dotted path."""
        return dict(iter_layers(self))

    def zero_states(self) -> None:
        """Reset every hidden state to ``None`` (start of a new sequence)."""
        for layer in self.layers().values():
            layer.zero_states()

    def detach_states(self) -> None:
        """Detach every hidden state from the autograd graph (truncated BPTT)."""
        for layer in self.layers().values():
            layer.detach_states()

    def save_states(self) -> dict[str, Tensor]:
        """``{path.state: tensor}`` for every state; a state still ``None`` is an empty tensor."""
        out: dict[str, Tensor] = {}
        for path, layer in self.layers().items():
            for name, value in layer.states():
                key = f"{path}.{name}" if path else name
                out[key] = NONE_STATE.clone() if value is None else value.detach().clone()
        return out

    def load_states(self, states: dict[str, Tensor], strict: bool = True) -> None:
        """Load states saved by :meth:`save_states`, checked against this model.

        With ``strict`` every state of the model must be present and nothing else; with
        ``strict=False`` unknown keys are ignored and missing states are left as they are.
        Shapes must put ``num_neurons`` at each layer's ``dim``. Tensors move to the
        layer's device. Nothing is changed unless every check passes.
        """
        slots = {}
        for path, layer in self.layers().items():
            for name in layer.state_names():
                slots[f"{path}.{name}" if path else name] = (layer, name)
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
                problems.append(
                    f"{key}: shape {tuple(value.shape)} does not have num_neurons={layer.num_neurons} at dim={layer.dim}"
                )
                continue
            other, shape = first_shape.setdefault(id(layer), (key, value.shape))
            if shape != value.shape:
                problems.append(f"{key}: shape {tuple(value.shape)} differs from {other} of shape {tuple(shape)}")
                continue
            updates.append((layer, name, value.detach().to(_device_of(layer), copy=True)))  # never alias the caller's tensors
        if problems:
            raise ValueError("cannot load states: " + "; ".join(problems))
        for layer, name, value in updates:
            object.__setattr__(layer, name, value)

    def save_states_file(self, path: str | Path) -> None:
        """Write all states to ``.safetensors`` or ``.pt`` (chosen by suffix), atomically."""
        write_state_file(path, self.save_states())

    def load_states_file(self, path: str | Path, strict: bool = True) -> None:
        """Read a file written by :meth:`save_states_file` (never unpickles objects)."""
        states = read_state_file(path)
        try:
            self.load_states(states, strict=strict)
        except ValueError as err:
            raise StateFileError(f"{path}: {err}") from None

    def run(self, x_seq: Tensor) -> Tensor:
        """Run a whole sequence ``[T, ...]``; the base class steps ``forward`` T times."""
        return torch.stack([self(x_t) for x_t in x_seq.unbind(0)])

    def compile(self) -> Model:  # type: ignore[override]
        """Replace every raw parameter by its activated value (inference speed-up)."""
        for layer in self.layers().values():
            layer.compile()
        return self

    def decompile(self) -> Model:
        """Undo :meth:`compile` exactly, learnability included."""
        for layer in self.layers().values():
            layer.decompile()
        return self

    TTcompile = compile
    TTdecompile = decompile
    TTuncompile = decompile


def _device_of(layer: Layer) -> torch.device:
    for tensor in layer.parameters():
        return tensor.device
    for tensor in layer.buffers():
        return tensor.device
    return torch.device("cpu")


class Sequential(Model):
    """A :class:`Model` that applies its modules in order, step by step or over sequences.

    ``forward(x)`` is one timestep; ``run(x_seq)`` runs each module over the whole
    sequence in turn (see :func:`tracetorch.core.sequence.run`), so stateless layers
    fold time into the batch and neuron layers use their sequence path.

    Example:
        >>> import torch, tracetorch as tt
        >>> net = tt.Sequential(torch.nn.Linear(4, 3), tt.snn.LIB(3))
        >>> net.run(torch.rand(10, 2, 4)).shape
        torch.Size([10, 2, 3])
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            self.add_module(str(index), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> nn.Module:
        return list(self._modules.values())[index]

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(list(self._modules.values()))

    def forward(self, x: Tensor) -> Tensor:
        for module in self:
            x = module(x)
        return x

    def run(self, x_seq: Tensor) -> Tensor:
        from tracetorch.core.sequence import run

        for module in self:
            x_seq = run(module, x_seq)
        return x_seq
