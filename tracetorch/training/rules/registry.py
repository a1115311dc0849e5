"""The learning-rule registry: ``trainer.learning`` names a class registered here (or ``pkg.mod:Class``).

Example:
    >>> from tracetorch.training.rules.registry import get_rule
    >>> get_rule("tbptt").options
    ('detach_every',)
"""

from __future__ import annotations

from typing import Any

from tracetorch.suggest import close_matches, did_you_mean
from tracetorch.training.rules.base import LearningRule

__all__ = ["register_rule", "get_rule", "rule_names", "check_rule_options", "RULES"]

RULES: dict[str, type[LearningRule]] = {}


def register_rule(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: make a :class:`LearningRule` selectable as ``trainer.learning=<name>``."""

    def add(cls: type[LearningRule]) -> type[LearningRule]:
        if not (isinstance(cls, type) and issubclass(cls, LearningRule)):
            raise TypeError(f"register_rule({name!r}): {cls!r} is not a LearningRule subclass")
        if name in RULES and RULES[name] is not cls:
            raise ValueError(f"learning rule {name!r} is already registered")
        cls.name = name
        RULES[name] = cls
        return cls

    return add


def rule_names() -> list[str]:
    return sorted(RULES)


def get_rule(name: str) -> type[LearningRule]:
    """A registered rule, or ``pkg.module:Class`` imported (a trusted config's choice)."""
    if ":" in name:
        from tracetorch.data.registry import import_callable

        cls: Any = import_callable(name)
        if not (isinstance(cls, type) and issubclass(cls, LearningRule)):
            raise ValueError(f"trainer.learning={name!r} is not a LearningRule subclass")
        return cls
    if name not in RULES:
        close = close_matches(name, rule_names(), n=1)
        hint = f"; {did_you_mean(close)}" if close else ""
        raise ValueError(f"unknown learning rule {name!r}{hint} (known: {', '.join(rule_names())})")
    return RULES[name]


def check_rule_options(trainer: Any) -> None:
    """Check the ``trainer`` config section's rule-specific keys against its rule (``ValueError`` if they clash)."""
    get_rule(trainer.learning).check(trainer)


