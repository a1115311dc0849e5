"""Name -> callable registries with helpful errors, and ``"module:attr"`` imports.

Example:
    >>> from tracetorch.data.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side=1):
    ...     return side * side
    >>> shapes.call("square", {"side": 3})
    9
    >>> shapes.get("sqare")
    Traceback (most recent call last):
    ...
    KeyError: "unknown shape 'sqare'; did you mean 'square'? (known: square)"
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from tracetorch.suggest import close_matches, did_you_mean

__all__ = ["Registry", "import_callable", "call_with_checked_kwargs"]


def import_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:attr"`` (or ``"package.module.attr"``) and check it is callable."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"expected 'package.module:function', got {spec!r}")
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"expected 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} named in {spec!r}: {err}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is a {type(obj).__name__}, not a callable")
    return obj


def call_with_checked_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> Any:
    """Call ``fn(**kwargs)`` after checking every key against its signature (all problems at once)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn(**kwargs)
    params = signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"{what}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}")
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"{what}: {err}") from None
    return fn(**kwargs)


class Registry:
    """A named collection of factories (datasets, encoders, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, fn: Callable[..., Any] | None = None):  # type: ignore[no-untyped-def]
        """Register ``fn`` under ``name`` (usable as a decorator)."""

        def add(func: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items and self._items[name] is not func:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = func
            return func

        return add(fn) if fn is not None else add

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            close = close_matches(str(name), self.names(), n=3)
            hint = f"; {did_you_mean(close)}" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")
        return self._items[name]

    def call(self, name: str, kwargs: dict[str, Any]) -> Any:
        return call_with_checked_kwargs(self.get(name), kwargs, f"{self.kind} {name!r}")
