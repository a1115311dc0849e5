"""The learning-rule interface and what a rule gets from the trainer.

Example:
    >>> from tracetorch.training.rules.base import LearningRule
    >>> sorted(LearningRule.owned_options())
    ['detach_every', 'update_every']
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from tracetorch.training.readout import Readout
from tracetorch.training.step import OptimizerStep

__all__ = ["LearningRule", "RuleContext", "BatchResult"]

BatchResult = tuple[Tensor, Tensor] | None
"""``(output [T, B, C] detached, loss)``, or None when the batch was skipped (non-finite, ``nan_policy=skip``)."""


@dataclass
class RuleContext:
    """Everything a rule works with: the model, how outputs become a loss, the optimizer step, the config."""

    model: nn.Module
    readout: Readout
    step: OptimizerStep
    autocast: Callable[[], AbstractContextManager[Any]]
    trainer: Any  # the TrainerConfig section


class LearningRule:
    """One batch of training. Subclasses set ``options`` (the ``trainer.*`` keys they read) and ``train_batch``.

    The states are zeroed before ``train_batch``; a rule returns the detached output
    sequence and the loss, or None when the batch was dropped by the NaN policy.
    """

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    prepare_model: ClassVar[Callable[[nn.Module], Any] | None] = None  # e.g. wrap layers for trace learning
    episodic: ClassVar[bool] = False  # True: trains in an environment (EpisodeTrainer), not on batches

    def __init__(self, context: RuleContext) -> None:
        self.context = context

    def train_batch(self, x_seq: Tensor, y: Tensor) -> BatchResult:
        raise NotImplementedError

    @staticmethod
    def owned_options() -> dict[str, str]:
        """``{trainer key: the rule that reads it}`` over the registered rules."""
        from tracetorch.training.rules.registry import RULES

        return {option: name for name, cls in RULES.items() for option in cls.options}

    @classmethod
    def check(cls, trainer: Any) -> None:
        """Refuse rule-specific keys of other rules (``ValueError`` naming the key and its rule)."""
        for option, owner in cls.owned_options().items():
            if option not in cls.options and getattr(trainer, option, None) is not None:
                raise ValueError(cls.misplaced(option, owner))

    @classmethod
    def misplaced(cls, option: str, owner: str) -> str:
        return f"trainer.{option} applies to learning={owner} only (got learning={cls.name})"
