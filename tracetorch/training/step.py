"""The optimizer step: backward, gradient clipping, the AMP scaler and the NaN/inf policy.

Learning rules call :meth:`OptimizerStep.apply` (zero, backward, update) or its two halves
:meth:`~OptimizerStep.backward` and :meth:`~OptimizerStep.update` (gradients accumulated
over several backward calls). Each call takes the :class:`Replay` of the loss it works on:
the input steps and the hidden states they started from, so that a non-finite value can
be traced to the first layer that produced it (:func:`~tracetorch.training.faults.locate_non_finite`).
A non-finite loss or gradient is never applied: ``nan_policy="skip"`` returns False,
``"stop"`` raises :class:`~tracetorch.training.faults.NonFiniteError`.

In a multi-process run (``world``, :mod:`tracetorch.training.distributed`) the loss check
is collective (a non-finite loss on any rank is skipped or stops on every rank), the
loss is weighted by the rank's share of the batch and the gradients are averaged over
the ranks before clipping; with one process none of this runs.

Example:
    >>> import torch
    >>> from tracetorch.training.step import OptimizerStep, Replay
    >>> w = torch.nn.Linear(2, 1)
    >>> step = OptimizerStep(w, torch.optim.SGD(w.parameters(), lr=0.1), grad_clip=1.0)
    >>> step.apply(w(torch.ones(1, 2)).sum(), Replay(torch.ones(1, 1, 2))), step.global_step
    (True, 1)
    >>> step.apply(torch.tensor(float("nan"), requires_grad=True), Replay(torch.ones(1, 1, 2)))
    Traceback (most recent call last):
    ...
    tracetorch.training.faults.NonFiniteError: non-finite loss (nan) at training step 2; ...
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.training.distributed import World
from tracetorch.training.faults import NonFiniteError, locate_non_finite

__all__ = ["OptimizerStep", "Replay"]


@dataclass
class Replay:
    """What a loss was computed from: ``x_seq`` (its timesteps), the index of its first step, the starting states."""

    x_seq: Tensor
    start: int = 0
    states: list | None = None


@dataclass
class OptimizerStep:
    """Backward and update with clipping, an optional ``GradScaler`` and the NaN policy.

    ``describe_position`` says where training is (``"epoch 2, batch 5"``) and
    ``last_checkpoint`` where the last good checkpoint is, for the error message.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    grad_clip: float | None = None
    nan_policy: str = "stop"
    scaler: Any = None
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
    describe_position: Callable[[], str] = lambda: ""
    last_checkpoint: Callable[[], Any] = lambda: None
    global_step: int = field(default=0)
    world: World = field(default_factory=World)
    loss_weight: float = 1.0  # this rank's share of the global batch times the world size (1.0: one process)

    def apply(self, loss: Tensor, replay: Replay) -> bool:
        """Backward + update of one loss; False (nothing applied) when ``nan_policy=skip`` meets a non-finite value."""
        self.optimizer.zero_grad(set_to_none=True)
        return self.backward(loss, replay) and self.update(replay)

    def backward(self, loss: Tensor, replay: Replay) -> bool:
        """Accumulate ``loss``'s gradient; a non-finite loss is refused (gradients cleared) before backward."""
        local_bad = not torch.isfinite(loss.detach()).all()
        if self.world.any(local_bad):
            self.optimizer.zero_grad(set_to_none=True)
            if not local_bad:
                return self.non_finite("loss on another rank", replay,
                                       where=f"rank {self.world.rank} of {self.world.size} had finite values")
            return self.non_finite(f"loss ({float(loss.detach()):g}){self._on_rank()}", replay)
        if self.loss_weight != 1.0:
            loss = loss * self.loss_weight
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return True

    def update(self, replay: Replay) -> bool:
        """Clip and apply the accumulated gradient, then clear it; a non-finite gradient is never applied."""
        self.world.average_gradients([p for p in self.model.parameters() if p.requires_grad])
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])) if params else None
        if self.scaler is None and norm is not None and not torch.isfinite(norm):
            bad = [name for name, p in self.model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            self.optimizer.zero_grad(set_to_none=True)
            where = f"non-finite gradients in {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}"
            return self.non_finite(f"gradient norm ({float(norm):g})", replay, where=where)
        if self.scaler is not None:  # fp16: the scaler itself skips steps with inf gradients
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return True

    def _on_rank(self) -> str:
        return f" on rank {self.world.rank}" if self.world.distributed else ""

    def non_finite(self, what: str, replay: Replay, where: str | None = None) -> bool:
        """``nan_policy=skip``: return False; ``stop``: raise :class:`NonFiniteError` naming the step and layer."""
        if self.nan_policy == "skip":
            return False
        if where is None:
            where = "first non-finite output: " + locate_non_finite(self.model, replay.x_seq, replay.states,
                                                                     first_step=replay.start, autocast=self.autocast)
        last = self.last_checkpoint()
        kept = f"the last good checkpoint is {last}" if last is not None else "no checkpoint was written yet"
        position = self.describe_position()
        raise NonFiniteError(
            f"non-finite {what} at training step {self.global_step + 1}{f' ({position})' if position else ''}; "
            f"{where}. Training stopped before applying it; {kept}. Lower optim.lr, set "
            f"trainer.grad_clip, or set trainer.nan_policy=skip to skip such batches"
        )
