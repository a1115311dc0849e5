"""A learning rule from outside the package (tests/test_train_components.py trains with it through tt-train)."""

from __future__ import annotations

from torch import Tensor

from tracetorch.kernels.sequence import run as run_sequence
from tracetorch.training.rules.base import BatchResult, LearningRule
from tracetorch.training.step import Replay


class HalfLoss(LearningRule):
    """BPTT on half the loss: one optimizer step per batch, and a visible trace of having been used."""

    calls = 0

    def train_batch(self, x_seq: Tensor, y: Tensor) -> BatchResult:
        type(self).calls += 1
        out = run_sequence(self.context.model, x_seq)
        loss = self.context.readout.loss(out.float(), y)
        if not self.context.step.apply(0.5 * loss, Replay(x_seq)):
            return None
        return out.detach().float(), loss.detach()
