"""Truncated BPTT: the model is stepped; every ``detach_every`` steps the chunk's loss is applied and states detached.

The autograd graph never spans more than ``detach_every`` steps (``1``: fully online).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tracetorch.core.states import detach_states
from tracetorch.training.faults import snapshot_states
from tracetorch.training.rules.base import BatchResult, LearningRule
from tracetorch.training.rules.registry import register_rule
from tracetorch.training.step import Replay

__all__ = ["TBPTT"]


@register_rule("tbptt")
class TBPTT(LearningRule):
    """Chunks of ``trainer.detach_every`` steps: forward, chunk loss, optimizer step, detach."""

    options = ("detach_every",)

    @classmethod
    def check(cls, trainer: object) -> None:
        super().check(trainer)
        if getattr(trainer, "detach_every", None) is None:
            raise ValueError("trainer.learning=tbptt needs trainer.detach_every (steps per backward)")

    def train_batch(self, x_seq: Tensor, y: Tensor) -> BatchResult:
        ctx = self.context
        k, steps, outs = ctx.trainer.detach_every, x_seq.shape[0], []
        for start in range(0, steps, k):
            replay = Replay(x_seq[start : start + k], start, snapshot_states(ctx.model))
            with ctx.autocast():
                chunk = torch.stack([ctx.model(x_t) for x_t in replay.x_seq.unbind(0)])
            loss = ctx.readout.chunk_loss(chunk.float(), y, start, steps)
            if loss is not None and not ctx.step.apply(loss, replay):
                return None
            detach_states(ctx.model)
            outs.append(chunk.detach().float())
        out = torch.cat(outs)
        loss = ctx.readout.loss(out, y)
        if not torch.isfinite(loss).all() and not ctx.step.non_finite(f"loss ({float(loss):g})", Replay(x_seq)):
            return None
        return out, loss
