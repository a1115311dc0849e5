"""Learning rules: how one batch of ``[T, B, ...]`` inputs turns into optimizer steps.

A rule is a small class (:class:`~tracetorch.training.rules.base.LearningRule`) with one
method, ``train_batch(x_seq, y)``; ``trainer.learning`` picks it by name. Built in:
``bptt`` (:mod:`.bptt`), ``tbptt`` (:mod:`.tbptt`), ``trace`` (:mod:`.trace`), and the episodic
``reflect`` (:mod:`.reflect`, run by :class:`~tracetorch.training.episodes.EpisodeTrainer`). A new rule
is one file plus one :func:`register_rule` line, or, from your own package, the value
``trainer.learning=pkg.module:MyRule`` (a command-line or config-file choice; a
checkpoint's config may only name registered rules).

Example:
    >>> from tracetorch.training.rules import get_rule, rule_names
    >>> rule_names()
    ['bptt', 'reflect', 'tbptt', 'trace']
    >>> get_rule("tbpt")
    Traceback (most recent call last):
    ...
    ValueError: unknown learning rule 'tbpt'; did you mean 'tbptt'? (known: bptt, reflect, tbptt, trace)
"""

from __future__ import annotations

from typing import Any

from tracetorch.suggest import close_matches, did_you_mean
from tracetorch.training.rules.base import LearningRule, RuleContext

__all__ = ["LearningRule", "RuleContext", "register_rule", "get_rule", "rule_names", "check_rule_options"]

_RULES: dict[str, type[LearningRule]] = {}


def register_rule(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: make a :class:`LearningRule` selectable as ``trainer.learning=<name>``."""

    def add(cls: type[LearningRule]) -> type[LearningRule]:
        if not (isinstance(cls, type) and issubclass(cls, LearningRule)):
            raise TypeError(f"register_rule({name!r}): {cls!r} is not a LearningRule subclass")
        if name in _RULES and _RULES[name] is not cls:
            raise ValueError(f"learning rule {name!r} is already registered")
        cls.name = name
        _RULES[name] = cls
        return cls

    return add


def rule_names() -> list[str]:
    return sorted(_RULES)


def get_rule(name: str) -> type[LearningRule]:
    """A registered rule, or ``pkg.module:Class`` imported (a trusted config's choice)."""
    if ":" in name:
        from tracetorch.data.registry import import_callable

        cls: Any = import_callable(name)
        if not (isinstance(cls, type) and issubclass(cls, LearningRule)):
            raise ValueError(f"trainer.learning={name!r} is not a LearningRule subclass")
        return cls
    if name not in _RULES:
        close = close_matches(name, rule_names(), n=1)
        hint = f"; {did_you_mean(close)}" if close else ""
        raise ValueError(f"unknown learning rule {name!r}{hint} (known: {', '.join(rule_names())})")
    return _RULES[name]


def check_rule_options(trainer: Any) -> None:
    """Check the ``trainer`` config section's rule-specific keys against its rule (``ValueError`` if they clash)."""
    get_rule(trainer.learning).check(trainer)


from tracetorch.training.rules import bptt, reflect, tbptt, trace  # noqa: E402  (built-in rules register themselves)

__all__ += ["bptt", "reflect", "tbptt", "trace"]
