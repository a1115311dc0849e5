"""Smooth constraints: how a stored raw value maps to the value a layer uses.

Each constraint is an activation (raw -> value), its exact inverse (value -> raw) and
the open domain of allowed values, so that a user-supplied value can be validated
before it is turned into a raw tensor.

Example:
    >>> import torch
    >>> from tracetorch.core.constraints import CONSTRAINTS
    >>> c = CONSTRAINTS["sigmoid"]
    >>> round(float(c.activate(c.invert(torch.tensor(0.9)))), 6)
    0.9
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from tracetorch.functional import sigmoid_inverse, softplus_inverse

__all__ = ["Constraint", "CONSTRAINTS"]


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class Constraint:
    """An activation with its inverse and the set of values it can produce."""

    name: str
    activate: Callable[[Tensor], Tensor]
    invert: Callable[[Tensor], Tensor]
    low: float | None = None
    high: float | None = None

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "any real number"
        if self.high is None:
            return f"> {self.low:g}"
        return f"in ({self.low:g}, {self.high:g})"

    def violations(self, value: Tensor) -> Tensor:
        """Boolean mask of the entries of ``value`` this constraint cannot produce."""
        ok = torch.isfinite(value)
        if self.low is not None:
            ok &= value > self.low
        if self.high is not None:
            ok &= value < self.high
        return ~ok


CONSTRAINTS: dict[str, Constraint] = {
    "sigmoid": Constraint("sigmoid", torch.sigmoid, sigmoid_inverse, 0.0, 1.0),
    "softplus": Constraint("softplus", torch.nn.functional.softplus, softplus_inverse, 0.0),
    "arcsinh": Constraint("arcsinh", torch.asinh, torch.sinh),
    "none": Constraint("none", _identity, _identity),
}
