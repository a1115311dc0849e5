"""``tt.Layer``: the base class of every traceTorch layer, built-in or custom.

It gives a layer three things:

* **constrained parameters**: ``register_param(name, value, rank, learn, constraint)``
  stores ``raw_<name>`` (an ``nn.Parameter`` when learnable, else a buffer) and
  ``layer.<name>`` reads the activated value (sigmoid for decays, softplus for
  thresholds, ...). ``TTcompile()`` (also ``bake_parameters()``) swaps each raw value
  for its activated value so inference skips the activation; ``TTuncompile()`` (also
  ``unbake_parameters()``) restores the raw values exactly. ``compile()`` is torch's own
  (``torch.compile``), untouched.
* **hidden states**: ``register_state(name)``; states start as ``None`` and are created
  lazily shaped like the input; :meth:`Layer.set_state` is the one way traceTorch writes
  them; ``zero_states()`` / ``detach_states()`` (a whole model's: :mod:`tracetorch.core.states`).
* **dimension handling**: the neuron dimension is ``dim``; parameters are broadcast
  along it (``param_view``) so the input never has to be moved in memory.

Example (a custom leaky integrator ``mem = decay * mem + x``):
    >>> import torch, tracetorch as tt
    >>> class Leaky(tt.Layer):
    ...     def __init__(self, num_neurons, decay=0.5, dim=-1):
    ...         super().__init__(num_neurons, dim)
    ...         self.register_param("decay", decay, rank=1, learn=True, constraint="sigmoid")
    ...         self.register_state("mem")
    ...     def forward(self, x):
    ...         x = self.check_input(x)
    ...         self.mem = self.param_view("decay", x) * self.zeros_if_none(self.mem, x) + x
    ...         return self.mem
    >>> layer = Leaky(3)
    >>> _ = layer(torch.ones(2, 3))
    >>> layer(torch.ones(2, 3))[0]
    tensor([1.5000, 1.5000, 1.5000], grad_fn=<SelectBackward0>)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.core.constraints import CONSTRAINTS, Constraint

__all__ = ["Layer", "ParamInfo"]


@dataclass
class ParamInfo:
    """Bookkeeping for one registered parameter."""

    constraint: Constraint
    rank: int
    learn: bool
    compiled: bool = False
    stash: Tensor | None = None
    requires_grad: bool = True  # of the raw parameter when compiled (a frozen one stays frozen)


class Layer(nn.Module):
    """Base class for layers with constrained parameters and lazily created states."""

    def __init__(self, num_neurons: int, dim: int = -1) -> None:
        super().__init__()
        if isinstance(num_neurons, bool) or not isinstance(num_neurons, int) or num_neurons < 1:
            raise ValueError(f"{type(self).__name__}: num_neurons must be a positive int, got {num_neurons!r}")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValueError(f"{type(self).__name__}: dim must be an int, got {dim!r}")
        self.num_neurons = num_neurons
        self.dim = dim
        self._tt_params: dict[str, ParamInfo] = {}
        self._tt_states: list[str] = []

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("_tt_params")
        if params is not None and name in params:
            return self.param_value(name)
        return super().__getattr__(name)

    # parameters ---------------------------------------------------------------------

    def register_param(
        self,
        name: str,
        value: float | Tensor,
        rank: int = 1,
        learn: bool = True,
        constraint: str | Constraint = "none",
    ) -> None:
        """Register ``raw_<name>`` from a value (float, 0-d or ``[num_neurons]`` tensor).

        ``rank`` 0 stores one scalar, 1 one value per neuron (a tensor value decides its
        own rank). Values outside the constraint are a ``ValueError`` naming ``name``.
        """
        where = f"{type(self).__name__}.{name}"
        c = CONSTRAINTS[constraint] if isinstance(constraint, str) else constraint
        if isinstance(rank, bool) or rank not in (0, 1):
            raise ValueError(f"{where}: rank must be 0 (one shared scalar) or 1 (one per neuron), got {rank!r}")
        if not isinstance(learn, bool):
            raise ValueError(f"{where}: learn must be True or False, got {learn!r}")
        if isinstance(value, Tensor):
            tensor = value.detach().clone().to(torch.get_default_dtype() if not value.is_floating_point() else value.dtype)
            if tensor.ndim == 0:
                rank = 0
            elif tensor.ndim == 1 and tensor.numel() == self.num_neurons:
                rank = 1
            else:
                raise ValueError(
                    f"{where}: expected a scalar or a tensor of shape ({self.num_neurons},), "
                    f"got shape {tuple(tensor.shape)}"
                )
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            tensor = torch.full((self.num_neurons,) if rank == 1 else (), float(value))
        else:
            raise ValueError(f"{where}: expected a number or a tensor, got {type(value).__name__}")
        if tensor.is_meta:  # shape-only validation: no values to check or invert
            self._tt_params[name] = ParamInfo(c, rank, learn)
            self._set_raw(name, tensor, learn)
            return
        bad = c.violations(tensor)
        if bad.any():
            raise ValueError(f"{where}: value must be {c.describe()}, got {tensor[bad].flatten()[0].item():g}")
        raw = c.invert(tensor)
        if not torch.isfinite(raw).all():
            worst = tensor[~torch.isfinite(raw)].flatten()[0].item()
            raise ValueError(f"{where}: value {worst:g} is too large: its raw value (inverse of {c.name}) overflows {raw.dtype}")
        self._tt_params[name] = ParamInfo(c, rank, learn)
        self._set_raw(name, raw, learn)

    def _set_raw(self, name: str, raw: Tensor, learn: bool) -> None:
        key = f"raw_{name}"
        self._parameters.pop(key, None)
        self._buffers.pop(key, None)
        if learn:
            self.register_parameter(key, nn.Parameter(raw))
        else:
            self.register_buffer(key, raw)

    def param_names(self) -> list[str]:
        return list(self._tt_params)

    def param_info(self, name: str) -> ParamInfo:
        return self._tt_params[name]

    def param_value(self, name: str) -> Tensor:
        """The activated value of parameter ``name`` (its raw value once compiled)."""
        info = self._tt_params[name]
        raw = getattr(self, f"raw_{name}")
        return raw if info.compiled else info.constraint.activate(raw)

    def param_view(self, name: str, x: Tensor) -> Tensor:
        """The activated value, in ``x``'s dtype, shaped to broadcast along ``dim`` of ``x``."""
        value = self.param_value(name)
        if value.dtype != x.dtype and x.is_floating_point():
            value = value.to(x.dtype)
        if value.ndim == 0:
            return value
        trailing = x.ndim - 1 - (self.dim % x.ndim)
        return value.view(value.shape + (1,) * trailing) if trailing else value

    def params_for(self, x: Tensor) -> dict[str, Tensor]:
        return {name: self.param_view(name, x) for name in self._tt_params}

    # parameter baking: TTcompile / TTuncompile ---------------------------------------

    def TTcompile(self) -> Layer:  # the original traceTorch name
        """Store activated values in place of raw ones (frozen buffers) for inference."""
        for name, info in self._tt_params.items():
            if info.compiled:
                continue
            raw = getattr(self, f"raw_{name}")
            info.requires_grad = raw.requires_grad
            raw = raw.detach()
            info.stash = raw.clone()
            self._set_raw(name, info.constraint.activate(raw).clone(), learn=False)
            info.compiled = True
        return self

    def TTuncompile(self) -> Layer:  # the original traceTorch name
        """Undo :meth:`TTcompile`: raw values back (bit-exact when untouched), learnability too."""
        for name, info in self._tt_params.items():
            if not info.compiled:
                continue
            value = getattr(self, f"raw_{name}").detach()
            stash = info.stash
            if stash is not None:  # the layer may have moved (.to/.cuda) since TTcompile()
                stash = stash.to(device=value.device)
            if stash is not None and torch.equal(info.constraint.activate(stash).to(value.dtype), value):
                raw = stash.to(device=value.device, dtype=value.dtype)
            else:
                raw = info.constraint.invert(value)
            self._set_raw(name, raw, info.learn)
            if info.learn and not info.requires_grad:
                getattr(self, f"raw_{name}").requires_grad_(False)
            info.compiled = False
            info.stash = None
        return self

    TTdecompile = TTuncompile
    decompile = TTuncompile  # the earlier name; torch has no decompile, so it shadows nothing
    bake_parameters = TTcompile
    unbake_parameters = TTuncompile

    @property
    def is_compiled(self) -> bool:
        """True while :meth:`TTcompile` has baked some parameter."""
        return any(info.compiled for info in self._tt_params.values())

    # states -------------------------------------------------------------------------

    def register_state(self, name: str) -> None:
        """Declare a hidden state; it starts as ``None``."""
        if name not in self._tt_states:
            self._tt_states.append(name)
        self.set_state(name, None)

    def set_state(self, name: str, value: Tensor | None) -> None:
        """Write the hidden state ``name`` (``None``: zeros on the next call).

        The one place traceTorch writes a state slot: the step, the sequence run, ``zero_states``,
        ``detach_states``, device moves and :mod:`tracetorch.core.states` all come here.
        """
        if name not in self._tt_states:
            raise KeyError(f"{self._label()}: no hidden state {name!r}; its states are {', '.join(self._tt_states) or 'none'}")
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"{self._label()}: state {name!r} must be a tensor or None, got {type(value).__name__}")
        object.__setattr__(self, name, value)

    def state_names(self) -> list[str]:
        return list(self._tt_states)

    def states(self) -> Iterator[tuple[str, Tensor | None]]:
        for name in self._tt_states:
            yield name, getattr(self, name)

    def zero_states(self) -> None:
        """All states back to ``None`` (recreated as zeros on the next call)."""
        for name in self._tt_states:
            self.set_state(name, None)

    def detach_states(self) -> None:
        """Cut the autograd history of every state (truncated BPTT / online learning)."""
        for name, value in self.states():
            if value is not None:
                self.set_state(name, value.detach())

    # sequences ----------------------------------------------------------------------

    def run(self, x_seq: Tensor) -> Tensor:
        """Run a whole sequence ``[T, *input_shape]``; equals T calls of ``forward``.

        The base implementation steps; built-in layers override it with fused paths.
        """
        return torch.stack([self(x_t) for x_t in x_seq.unbind(0)])

    # input handling -----------------------------------------------------------------

    def check_input(self, x: Tensor) -> Tensor:
        """Validate ``x`` against ``num_neurons``/``dim`` and the held states.

        Integer and boolean inputs are cast to the default float dtype (spike counts and
        binary spikes are common inputs); everything else keeps its dtype.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"{self._label()}: expected a torch.Tensor input, got {type(x).__name__}")
        if not (x.is_floating_point() or x.is_complex()):
            x = x.to(torch.get_default_dtype())
        if x.ndim == 0 or not -x.ndim <= self.dim < x.ndim:
            raise ValueError(
                f"{self._label()}: input of shape {tuple(x.shape)} has no dimension {self.dim} "
                f"(the layer was built with dim={self.dim})"
            )
        if x.shape[self.dim] != self.num_neurons:
            raise ValueError(
                f"{self._label()}: input of shape {tuple(x.shape)} has {x.shape[self.dim]} at dim={self.dim}, "
                f"expected num_neurons={self.num_neurons}"
            )
        for name, state in self.states():
            if state is None:
                continue
            if state.shape != x.shape:
                raise ValueError(
                    f"{self._label()}: input of shape {tuple(x.shape)} does not match the held state "
                    f"'{name}' of shape {tuple(state.shape)} (batch size changed?); call zero_states() "
                    f"between sequences of different shapes"
                )
            if state.device != x.device:
                raise ValueError(
                    f"{self._label()}: input is on {x.device} but the state '{name}' is on {state.device}; "
                    f"move the input or call zero_states()"
                )
            break
        return x

    def check_sequence(self, x_seq: Tensor) -> Tensor:
        """Validate a sequence ``[T, *input_shape]`` (``T >= 1``) like :meth:`check_input` checks one step."""
        if not isinstance(x_seq, Tensor):
            raise TypeError(f"{self._label()}.run: expected a torch.Tensor of shape [T, ...], got {type(x_seq).__name__}")
        if x_seq.ndim < 2 or x_seq.shape[0] == 0:
            raise ValueError(
                f"{self._label()}.run: expected a sequence [T, *input_shape] with T >= 1, got shape {tuple(x_seq.shape)}"
            )
        if not (x_seq.is_floating_point() or x_seq.is_complex()):
            x_seq = x_seq.to(torch.get_default_dtype())
        self.check_input(x_seq[0])
        return x_seq

    @staticmethod
    def zeros_if_none(state: Tensor | None, like: Tensor) -> Tensor:
        return torch.zeros_like(like) if state is None else state

    def _label(self) -> str:
        return f"{type(self).__name__}(num_neurons={self.num_neurons}, dim={self.dim})"

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        result = super()._apply(fn, recurse)
        for name, value in self.states():
            if value is not None:
                self.set_state(name, fn(value))
        return result

