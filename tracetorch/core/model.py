"""``tt.Model``: finds every traceTorch layer a model holds and manages their states.

Layers are found anywhere: registered submodules, plain lists / tuples / dicts, and
attributes of plain Python objects kept on the model (see :mod:`tracetorch.core.states`,
which holds the state operations these methods call). Each layer gets a dotted path
(``net.1``, ``blocks.0.lif``, ``heads.left``) that names its states in
:meth:`Model.save_states` (``net.1.mem``).

``model.compile()`` is ``torch.nn.Module.compile`` (``torch.compile``); traceTorch's own
parameter baking is :meth:`Model.TTcompile` / :meth:`Model.TTuncompile` (also named
``bake_parameters`` / ``unbake_parameters``).

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

import torch
from torch import Tensor, nn

from tracetorch.core import states as _states
from tracetorch.core.layer import Layer
from tracetorch.core.state_io import StateFileError
from tracetorch.core.states import iter_layers
from tracetorch.kernels.sequence import run_chain

__all__ = ["Model", "Sequential", "iter_layers", "StateFileError"]


class Model(nn.Module):
    """Base class for models: bulk state management and parameter baking (:meth:`Model.TTcompile`)."""

    def layers(self) -> dict[str, Layer]:
        """Every traceTorch layer in the model, by dotted path."""
        return dict(iter_layers(self))

    def zero_states(self) -> None:
        """Reset every hidden state to ``None`` (start of a new sequence)."""
        _states.zero_states(self)

    def detach_states(self) -> None:
        """Detach every hidden state from the autograd graph (truncated BPTT)."""
        _states.detach_states(self)

    def save_states(self) -> dict[str, Tensor]:
        """``{path.state: tensor}`` for every state; a state still ``None`` is an empty tensor."""
        return _states.save_states(self)

    def load_states(self, states: dict[str, Tensor], strict: bool = True) -> None:
        """Load states saved by :meth:`save_states`, checked against this model (:func:`tracetorch.core.states.load_states`)."""
        _states.load_states(self, states, strict=strict)

    def save_states_file(self, path: str | Path) -> None:
        """Write all states to ``.safetensors`` or ``.pt`` (chosen by suffix), atomically."""
        _states.save_states_file(self, path)

    def load_states_file(self, path: str | Path, strict: bool = True) -> None:
        """Read a file written by :meth:`save_states_file` (never unpickles objects)."""
        _states.load_states_file(self, path, strict=strict)

    def run(self, x_seq: Tensor) -> Tensor:
        """Run a whole sequence ``[T, ...]``; the base class steps ``forward`` T times."""
        return torch.stack([self(x_t) for x_t in x_seq.unbind(0)])

    def TTcompile(self) -> Model:  # the original traceTorch name
        """Replace every raw parameter by its activated value (inference speed-up); see :meth:`Layer.TTcompile`."""
        for layer in self.layers().values():
            layer.TTcompile()
        return self

    def TTuncompile(self) -> Model:  # the original traceTorch name
        """Undo :meth:`TTcompile` exactly, learnability included."""
        for layer in self.layers().values():
            layer.TTuncompile()
        return self

    TTdecompile = TTuncompile
    decompile = TTuncompile  # the earlier name; torch has no decompile, so it shadows nothing
    bake_parameters = TTcompile
    unbake_parameters = TTuncompile


class Sequential(Model):
    """A :class:`Model` that applies its modules in order, step by step or over sequences.

    ``forward(x)`` is one timestep; ``run(x_seq)`` runs each module over the whole
    sequence in turn (see :func:`tracetorch.kernels.sequence.run`), so stateless layers
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
        return run_chain(list(self), x_seq)
