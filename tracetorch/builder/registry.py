"""The layer registry: names a spec may use, and the ``spike_fn`` / ``quant_fn`` functions.

Built in: the 32 SNN layers and the common torch layers. Add your own with the
:func:`register` decorator, or from another installed package through the
``tracetorch.layers`` entry-point group (``name = "pkg.module:LayerClass"``), read
lazily on the first lookup. Unknown names get the closest registered names.

Example:
    >>> import torch, tracetorch as tt
    >>> @tt.builder.register("Doubler")
    ... class Doubler(torch.nn.Module):
    ...     def forward(self, x):
    ...         return 2 * x
    >>> tt.build_model({"input_shape": [2], "layers": [{"Doubler": {}}]})(torch.ones(1, 2))
    tensor([[2., 2.]])
    >>> tt.build_model({"layers": [{"Dobler": {}}]})
    Traceback (most recent call last):
    ...
    tracetorch.builder.errors.SpecError: 1 problem:
      layers[0]: unknown layer 'Dobler'; did you mean 'Doubler'?
    >>> tt.builder.unregister("Doubler")
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal

from torch import nn

from tracetorch import functional
from tracetorch.snn import LAYERS
from tracetorch.snn.grammar import FAMILIES, closest_names, layer_names
from tracetorch.suggest import close_matches, did_you_mean

__all__ = [
    "ENTRY_POINT_GROUP",
    "TORCH_LAYERS",
    "LayerEntry",
    "UnknownNameError",
    "register",
    "unregister",
    "lookup",
    "registered_names",
    "register_function",
    "function_names",
    "lookup_function",
]

ENTRY_POINT_GROUP = "tracetorch.layers"
Kind = Literal["snn", "torch", "user"]
FnKind = Literal["spike_fn", "quant_fn"]

TORCH_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
    nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.Identity,
)


@dataclass(frozen=True)
class LayerEntry:
    """A registered layer: its spec name, the callable that builds it and where it came from."""

    name: str
    factory: Callable[..., nn.Module]
    kind: Kind


class UnknownNameError(KeyError):
    """A layer or function name nobody registered; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0])


_BUILTIN: dict[str, LayerEntry] = {
    **{name: LayerEntry(name, LAYERS[name], "snn") for name in layer_names()},
    **{cls.__name__: LayerEntry(cls.__name__, cls, "torch") for cls in TORCH_LAYERS},
}
_USER: dict[str, LayerEntry] = {}
_entry_points_loaded = False

_FUNCTIONS: dict[str, dict[str, Callable[..., Callable]]] = {
    "spike_fn": {"sigmoid4x": lambda: functional.sigmoid4x},
    "quant_fn": {
        "identity": nn.Identity,
        "round_ste": functional.round_ste,
        "stochastic_round_ste": functional.stochastic_round_ste,
        "probabilistic_ste": functional.probabilistic_ste,
    },
}


def register(name: str | None = None, *, override: bool = False) -> Callable[[Callable], Callable]:
    """Decorator adding a layer class or factory under ``name`` (default: its ``__name__``).

    Its keyword arguments become the layer's spec arguments (checked against its
    signature); ``in_features`` / ``in_channels`` / ``num_features`` / ``num_neurons``
    (with ``dim``) are inferred from the input shape like for the built-in layers.
    """

    def decorate(factory: Callable) -> Callable:
        key = name or factory.__name__
        if not callable(factory):
            raise TypeError(f"register({key!r}): expected a class or callable, got {type(factory).__name__}")
        if key in _BUILTIN:
            raise ValueError(f"register({key!r}): '{key}' is a built-in layer and cannot be replaced")
        if key in _USER and not override and _USER[key].factory is not factory:
            raise ValueError(f"register({key!r}): '{key}' is already registered (pass override=True to replace it)")
        _USER[key] = LayerEntry(key, factory, "user")
        return factory

    return decorate


def unregister(name: str) -> None:
    """Remove a user-registered layer (built-in layers stay)."""
    _USER.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _USER or ep.name in _BUILTIN:
            continue
        try:
            _USER[ep.name] = LayerEntry(ep.name, ep.load(), "user")
        except Exception as err:  # a broken plugin must not break the builder
            warnings.warn(f"tracetorch.layers entry point {ep.name!r} ({ep.value}) failed to load: {err}", stacklevel=2)


def registered_names() -> list[str]:
    """Every layer name a spec may use: the 32 SNN layers, torch layers, then user layers."""
    _load_entry_points()
    return [*_BUILTIN, *_USER]


def is_builtin(name: str) -> bool:
    return name in _BUILTIN


def lookup(name: str) -> LayerEntry:
    """The entry for ``name``; unknown names raise :class:`UnknownNameError` with suggestions."""
    if name in _BUILTIN:
        return _BUILTIN[name]
    _load_entry_points()
    if name in _USER:
        return _USER[name]
    raise UnknownNameError(unknown_layer_message(name))


def unknown_layer_message(name: str) -> str:
    """Why ``name`` is not a layer, with the closest registered names."""
    names = registered_names()
    upper = name.upper()
    family = next((f for f in sorted(FAMILIES, key=len, reverse=True) if upper.endswith(f)), None)
    prefix = upper[: len(upper) - len(family)] if family else ""
    if family and prefix and set(prefix) <= set("DSR") and len(set(prefix)) == len(prefix):
        if "R" in prefix and family in ("LI", "LIEMA"):
            best = closest_names(prefix + "LIB")
            return (f"unknown layer '{name}': the R (recurrent) prefix exists only on LIB, LIT and LITS; "
                    f"{family} has no recurrent form" + (f" ({did_you_mean(best[:1])})" if best else ""))
        canonical = "D" * ("D" in prefix) + "S" * ("S" in prefix) + "R" * ("R" in prefix) + family
        if canonical != upper:
            return f"unknown layer '{name}': prefixes go in the order D, S, R; {did_you_mean([canonical])}"
    lowered = {n.lower(): n for n in names}
    if name.lower() in lowered:
        return f"unknown layer '{name}': names are case-sensitive; {did_you_mean([lowered[name.lower()]])}"
    close = close_matches(name, names, n=3, cutoff=0.7, ignore_case=True)
    if close:
        return f"unknown layer '{name}'; {did_you_mean(close)}"
    others = [n for n in names if n not in _BUILTIN or _BUILTIN[n].kind != "snn"]
    return (f"unknown layer '{name}'; layers are {', '.join(others)} and the 32 SNN names "
            f"([D][S][R] + {' / '.join(FAMILIES)})")


def register_function(kind: FnKind, name: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator adding a ``spike_fn`` / ``quant_fn`` factory usable by name in specs.

    The factory is called with the spec's arguments and returns the function (or
    module) the layer uses: ``quant_fn: {name: round_ste, step_size: 0.5}``.
    """
    if kind not in _FUNCTIONS:
        raise ValueError(f"register_function: kind must be one of {', '.join(_FUNCTIONS)}, got {kind!r}")

    def decorate(factory: Callable) -> Callable:
        _FUNCTIONS[kind][name or factory.__name__] = factory
        return factory

    return decorate


def function_names(kind: FnKind) -> list[str]:
    return list(_FUNCTIONS[kind])


def lookup_function(kind: FnKind, name: str) -> Callable[..., Callable]:
    """The factory registered as ``name`` for ``kind``; unknown names suggest close ones."""
    table = _FUNCTIONS[kind]
    if name in table:
        return table[name]
    close = close_matches(name, table, n=3, cutoff=0.5)
    hint = did_you_mean(close) if close else f"known: {', '.join(table)}"
    raise UnknownNameError(f"unknown {kind} '{name}'; {hint}")


def function_to_spec(kind: FnKind, fn: Any) -> str | dict[str, Any]:
    """The spec form (``"round_ste"`` or ``{"name": ..., **args}``) of a function a layer holds."""
    for name, factory in _FUNCTIONS[kind].items():
        params = inspect.signature(factory).parameters
        try:
            probe = factory()
        except TypeError:
            continue
        if probe is fn:
            return name
        if isinstance(fn, nn.Module) and type(probe) is type(fn):
            args = {p: getattr(fn, p) for p in params if hasattr(fn, p) and getattr(fn, p) != params[p].default}
            return {"name": name, **args} if args else name
    raise ValueError(
        f"cannot write {kind}={fn!r} in a spec: register its factory with "
        f"tt.builder.register_function({kind!r}, name)"
    )
