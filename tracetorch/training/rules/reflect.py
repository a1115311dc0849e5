"""REFLECT: trace-based policy gradient in an environment (:mod:`tracetorch.rl`), one episode at a time.

An episodic rule: :class:`~tracetorch.training.episodes.EpisodeTrainer` runs it, not the batch loop.
"""

from __future__ import annotations

from torch import Tensor

from tracetorch.training.rules.base import BatchResult, LearningRule
from tracetorch.training.rules.registry import register_rule

__all__ = ["Reflect"]


@register_rule("reflect")
class Reflect(LearningRule):
    """Episodes in the ``rl`` section's environment, learned by :class:`tracetorch.online.ReflectLearner`."""

    episodic = True

    def train_batch(self, x_seq: Tensor, y: Tensor) -> BatchResult:
        raise ValueError("trainer.learning=reflect trains in an environment, not on a dataset's batches")
