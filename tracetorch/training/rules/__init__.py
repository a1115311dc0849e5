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
    >>> {"bptt", "reflect", "tbptt", "trace"} <= set(rule_names())
    True
    >>> get_rule("tbpt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown learning rule 'tbpt'; did you mean 'tbptt'? (known: bptt, reflect, ...)
"""

from __future__ import annotations

from tracetorch.training.rules.base import LearningRule, RuleContext
from tracetorch.training.rules.registry import check_rule_options, get_rule, register_rule, rule_names

__all__ = ["LearningRule", "RuleContext", "register_rule", "get_rule", "rule_names", "check_rule_options"]

from tracetorch.training.rules import bptt, reflect, tbptt, trace  # noqa: E402  (built-in rules register themselves)

__all__ += ["bptt", "reflect", "tbptt", "trace"]
