"""Online learning without BPTT (OTTT): an :class:`~tracetorch.online.OnlineLearner` over the batch's timesteps.

Linear/Conv layers feeding spiking layers carry presynaptic traces
(:func:`~tracetorch.online.enable_trace_learning`, applied once to the model); each step's
loss is backpropagated through that step only and the optimizer steps every
``trainer.update_every`` timesteps (unset: once per sequence).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tracetorch.online.learner import OnlineLearner
from tracetorch.online.trace import enable_trace_learning
from tracetorch.training.faults import snapshot_states
from tracetorch.training.rules.base import BatchResult, LearningRule
from tracetorch.training.rules.registry import register_rule
from tracetorch.training.step import Replay

__all__ = ["Trace"]


@register_rule("trace")
class Trace(LearningRule):
    """Per step: forward, backward of the step's loss, detach; an update every ``update_every`` steps."""

    options = ("update_every",)
    prepare_model = staticmethod(enable_trace_learning)

    @classmethod
    def misplaced(cls, option: str, owner: str) -> str:
        if option == "detach_every":
            return ("learning=trace detaches every step; set trainer.update_every (steps per optimizer step), "
                    "not trainer.detach_every")
        return super().misplaced(option, owner)

    def train_batch(self, x_seq: Tensor, y: Tensor) -> BatchResult:
        ctx = self.context
        steps = x_seq.shape[0]
        replay = Replay(x_seq[:1])
        learner = OnlineLearner(
            ctx.model, ctx.step.optimizer, lambda out, t: ctx.readout.chunk_loss(out.unsqueeze(0).float(), y, t, steps),
            update_every=ctx.trainer.update_every or steps,
            backward=lambda loss: ctx.step.backward(loss, replay), update=lambda: ctx.step.update(replay))
        ctx.step.optimizer.zero_grad(set_to_none=True)
        outs = []
        for t, x_t in enumerate(x_seq.unbind(0)):
            replay.x_seq, replay.start, replay.states = x_seq[t : t + 1], t, snapshot_states(ctx.model)
            with ctx.autocast():
                result = learner.step(x_t, t)
            if learner.skipped:
                return None
            outs.append(result.output.float())
        learner.flush()
        if learner.skipped:
            return None
        out = torch.stack(outs)
        return out, ctx.readout.loss(out, y)
