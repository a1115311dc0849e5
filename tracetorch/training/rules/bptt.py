"""Full backpropagation through time: the whole sequence in one ``run``, one loss, one optimizer step."""

from __future__ import annotations

from torch import Tensor

from tracetorch.kernels.sequence import run as run_sequence
from tracetorch.training.rules.base import BatchResult, LearningRule
from tracetorch.training.rules.registry import register_rule
from tracetorch.training.step import Replay

__all__ = ["BPTT"]


@register_rule("bptt")
class BPTT(LearningRule):
    """``loss = readout(model.run(x_seq), y)``; one optimizer step per batch."""

    @classmethod
    def misplaced(cls, option: str, owner: str) -> str:
        if option == "detach_every":
            return "trainer.detach_every is the truncation window of learning=tbptt, not bptt"
        return super().misplaced(option, owner)

    def train_batch(self, x_seq: Tensor, y: Tensor) -> BatchResult:
        ctx = self.context
        with ctx.autocast():
            out = run_sequence(ctx.model, x_seq)
        loss = ctx.readout.loss(out.float(), y)
        if not ctx.step.apply(loss, Replay(x_seq)):
            return None
        return out.detach().float(), loss.detach()
