"""``NeuronLayer``: one class that becomes any of the 32 layers from its name.

The name is parsed into :class:`~tracetorch.snn.grammar.Flags`; the flags select the
parameters (from the one table in :mod:`tracetorch.snn.grammar`), the states and the
pure step function pieces of :mod:`tracetorch.snn.step`. :mod:`tracetorch.snn.zoo`
declares the 32 public classes, one line each.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

from torch import Tensor, nn

from tracetorch.core.layer import Layer
from tracetorch.functional import sigmoid4x
from tracetorch.kernels.dispatch import run_sequence
from tracetorch.kernels.neuron_run import NeuronRun
from tracetorch.kernels.sequence import run as run_module
from tracetorch.snn.grammar import Flags, ParamSpec, param_slot_names, param_specs, parse, state_names, state_slot_names
from tracetorch.snn.hints import constructor_message
from tracetorch.snn.step import neuron_step

__all__ = ["NeuronLayer", "describe"]

_IDENTITY = nn.Identity()


def _keyword_names(specs: tuple[ParamSpec, ...], fires: bool) -> list[str]:
    names = ["dim"]
    for spec in specs:
        names += [spec.name, f"{spec.name}_rank", f"learn_{spec.name}"]
    if fires:
        names += ["spike_fn", "quant_fn"]
    return names


def _is_default(key: str, value: Any, specs: tuple[ParamSpec, ...]) -> bool:
    """True when a constructor keyword was given its default value (kept out of config/repr)."""
    if isinstance(value, Tensor):
        return False
    defaults: dict[str, Any] = {"dim": -1, "spike_fn": sigmoid4x}
    for spec in specs:
        defaults.update({spec.name: spec.default, f"{spec.name}_rank": 1, f"learn_{spec.name}": True})
    if key == "quant_fn":
        return type(value) is nn.Identity
    if key not in defaults or isinstance(value, bool) != isinstance(defaults[key], bool):
        return False
    return value is defaults[key] if callable(value) else value == defaults[key]


class NeuronLayer(Layer):
    """A spiking / leaky-integrator layer whose dynamics are given by ``flags``.

    Subclasses set the class attribute ``FLAGS`` (see :mod:`tracetorch.snn.zoo`); the
    constructor accepts ``num_neurons``, ``dim`` and, for every parameter ``p`` of the
    layer, ``p``, ``p_rank`` and ``learn_p``; firing layers also ``spike_fn`` and
    ``quant_fn``.
    """

    FLAGS: Flags

    def __init__(self, num_neurons: int, **kwargs: Any) -> None:
        flags = type(self).FLAGS
        name = flags.name
        specs = param_specs(flags)
        allowed = set(_keyword_names(specs, flags.fires))
        for key in kwargs:
            if key not in allowed:
                raise constructor_message(name, flags, key)
        super().__init__(num_neurons, kwargs.get("dim", -1))
        self.flags = flags
        self._config = {k: v for k, v in kwargs.items() if not _is_default(k, v, specs)}
        for spec in specs:
            self.register_param(
                spec.name,
                kwargs.get(spec.name, spec.default),
                rank=kwargs.get(f"{spec.name}_rank", 1),
                learn=kwargs.get(f"learn_{spec.name}", True),
                constraint=spec.constraint,
            )
        for state in state_names(flags):
            self.register_state(state)
        for key, default in (("spike_fn", sigmoid4x), ("quant_fn", _IDENTITY)):
            fn = kwargs.get(key, default)
            if not callable(fn):
                raise ValueError(f"{name}: {key} must be callable, got {type(fn).__name__}")
            object.__setattr__(self, key, fn)  # stateless: kept out of the module tree and repr

    def forward(self, x: Tensor) -> Tensor:
        """One timestep: update the hidden states from ``x`` and return the output."""
        x = self.check_input(x)
        state = {n: getattr(self, n) for n in self._tt_states}
        out, new = neuron_step(self.flags, x, state, self.params_for(x), self.spike_fn, self.quant_fn)
        for key, value in new.items():
            self.set_state(key, value)
        return out

    def run(self, x_seq: Tensor) -> Tensor:
        """A whole sequence ``[T, *input_shape]`` at once; equals T calls of ``forward``.

        Uses a fused kernel when one covers this layer (see :mod:`tracetorch.kernels.dispatch`).
        """
        return self.run_pooled(x_seq, None)

    def run_pooled(self, x_seq: Tensor, pool: nn.MaxPool2d | None) -> Tensor:
        """``run(x_seq)`` max-pooled by ``pool`` (folded over time), as ``tt.Sequential.run`` asks for a layer followed
        by an ``nn.MaxPool2d``: on the C++ path the kernel pools as it computes, so the unpooled spikes are never
        stored (:func:`tracetorch.kernels.dispatch.explain_pooled`). ``pool=None``: :meth:`run`.

        Example:
            >>> import torch, tracetorch as tt
            >>> layer, pool = tt.snn.LIB(3, dim=-3), torch.nn.MaxPool2d(2)
            >>> layer.run_pooled(torch.rand(4, 2, 3, 8, 8), pool).shape
            torch.Size([4, 2, 3, 4, 4])
        """
        if pool is not None and type(self).run is not NeuronLayer.run:  # a subclass's own run stays in charge
            return run_module(pool, self.run(x_seq))
        x_seq = self.check_sequence(x_seq)
        out, states = run_sequence(self.neuron_run(x_seq), x_seq, pool)
        for key, value in states.items():
            self.set_state(key, value)
        return out

    def neuron_run(self, x_seq: Tensor) -> NeuronRun:
        """What the sequence paths need to run ``x_seq`` ``[T, *input_shape]``: flags, tensors and functions."""
        flags = self.flags
        return NeuronRun(flags, self.num_neurons, self.dim, self.params_for(x_seq[0]), dict(self.states()),
                         param_slot_names(flags), state_slot_names(flags), partial(neuron_step, flags), self.spike_fn,
                         self.quant_fn, self._label())

    def extra_repr(self) -> str:
        parts = [str(self.num_neurons)]
        if self.dim != -1:
            parts.append(f"dim={self.dim}")
        for key, value in self._config.items():
            if key == "dim":
                continue
            if isinstance(value, Tensor):
                parts.append(f"{key}=tensor{list(value.shape)}")
            elif isinstance(value, nn.Module):
                parts.append(f"{key}={value!r}".replace("\n", ""))
            elif callable(value):
                parts.append(f"{key}={getattr(value, '__name__', repr(value))}")
            else:
                parts.append(f"{key}={value!r}")
        return ", ".join(parts)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor keywords this layer was built with (defaults omitted)."""
        return dict(self._config)


def describe(flags: Flags) -> str:
    """The update equations of a layer, generated from its flags (used as docstring)."""
    d = flags.dual
    lines = [f"{flags.name}: " + _summary(flags), "", "Update per timestep (x: input)::", ""]
    if flags.synaptic:
        lines += (
            ["    pos_syn = pos_alpha*pos_syn + (1-pos_alpha)*pos(x)",
             "    neg_syn = neg_alpha*neg_syn + (1-neg_alpha)*neg(x)", "    u = pos_syn + neg_syn"]
            if d else ["    syn = alpha*syn + (1-alpha)*x", "    u = syn"]
        )
    else:
        lines.append("    u = x")
    if flags.recurrent and d:
        lines += [
            "    pos_rec = pos_gamma*pos_rec + (1-pos_gamma)*pos(prev_output)",
            "    neg_rec = neg_gamma*neg_rec + (1-neg_gamma)*neg(prev_output)",
            "    rec = pos_rec + neg_rec",
            "    pos_delta = pos_rec_weight*pos(rec) + pos(u)",
            "    neg_delta = neg_rec_weight*neg(rec) + neg(u)",
        ]
    elif flags.recurrent:
        lines += ["    rec = gamma*rec + (1-gamma)*prev_output", "    delta = rec_weight*rec + u"]
    elif d:
        lines += ["    pos_delta = pos(u); neg_delta = neg(u)"]
    else:
        lines += ["    delta = u"]
    if d:
        f = ("(1-pos_beta)*", "(1-neg_beta)*") if flags.ema else ("", "")
        lines += [f"    pos_mem = pos_beta*pos_mem + {f[0]}pos_delta",
                  f"    neg_mem = neg_beta*neg_mem + {f[1]}neg_delta", "    mem = pos_mem + neg_mem"]
    else:
        lines += [f"    mem = beta*mem + {'(1-beta)*' if flags.ema else ''}delta"]
    reset = "pos_mem -= r/2; neg_mem -= r/2" if d else "mem -= r"
    if flags.family == "LIB":
        lines += ["    s = quant_fn(spike_fn(mem - threshold + bias))", f"    r = s*threshold; {reset}", "    out = s"]
    elif flags.ternary:
        lines += [
            "    s_pos = quant_fn(spike_fn(mem - pos_threshold + bias))",
            "    s_neg = -quant_fn(spike_fn(-neg_threshold - mem - bias))",
            f"    r = s_pos*pos_threshold + s_neg*neg_threshold; {reset}",
            "    out = pos_scale*s_pos + neg_scale*s_neg" if flags.family == "LITS" else "    out = s_pos + s_neg",
        ]
    else:
        lines += ["    out = mem"]
    if flags.recurrent:
        lines.append("    prev_output = out")
    specs = param_specs(flags)
    lines += ["", "Parameters (keyword, default, constraint):", ""]
    lines += [f"    {s.name} = {s.default:g}  ({s.doc}; {s.constraint})" for s in specs]
    lines += ["", "Each parameter p also takes p_rank (0 or 1, default 1) and learn_p (default True).",
              "", "Example:", "", "    >>> import torch, tracetorch as tt", f"    >>> layer = tt.snn.{flags.name}(16)",
              "    >>> layer(torch.rand(8, 16)).shape  # one timestep", "    torch.Size([8, 16])"]
    return "\n".join(lines)


def _summary(flags: Flags) -> str:
    out = {"LI": "leaky integrator (returns the membrane)", "LIEMA": "leaky integrator with EMA membrane",
           "LIB": "binary firing", "LIT": "ternary firing", "LITS": "ternary firing with output scales"}
    extras = [w for w, on in (("dual", flags.dual), ("synaptic", flags.synaptic), ("recurrent", flags.recurrent)) if on]
    return (", ".join(extras) + " " if extras else "") + out[flags.family] + "."


def make_signature(flags: Flags) -> inspect.Signature:
    """An introspectable signature listing every keyword a layer accepts."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("num_neurons", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int),
        inspect.Parameter("dim", kw, default=-1, annotation=int),
    ]
    for spec in param_specs(flags):
        params += [
            inspect.Parameter(spec.name, kw, default=spec.default, annotation="float | Tensor"),
            inspect.Parameter(f"{spec.name}_rank", kw, default=1, annotation=int),
            inspect.Parameter(f"learn_{spec.name}", kw, default=True, annotation=bool),
        ]
    if flags.fires:
        params += [
            inspect.Parameter("spike_fn", kw, default=sigmoid4x),
            inspect.Parameter("quant_fn", kw, default=_IDENTITY),
        ]
    return inspect.Signature(params)


def make_layer_class(name: str, module: str = "tracetorch.snn") -> type[NeuronLayer]:
    """Create the public class for one layer name (used once per name by the zoo)."""
    flags = parse(name)
    cls = type(name, (NeuronLayer,), {"FLAGS": flags, "__doc__": describe(flags), "__module__": module})
    cls.__signature__ = make_signature(flags)  # type: ignore[attr-defined]
    return cls

