"""``OnlineLearner``: train one timestep at a time, with memory constant in the stream length.

Each :meth:`OnlineLearner.step` runs::

    out = model(x_t)                       # one timestep
    loss_fn(out, target_t).backward()      # skipped when target_t is None
    detach every hidden state              # no graph survives the step
    every `update_every` steps: optimizer.step(); optimizer.zero_grad()

Gradients of the steps between two updates add up (OTTT's accumulated variant for
``update_every = sequence length``; the online variant for ``update_every = 1``). With the
model's Linear/Conv modules wrapped by :func:`~tracetorch.online.enable_trace_learning`
their weight gradients carry the presynaptic traces (OTTT); without, each step's gradient
is the instantaneous one (truncation to one step).

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.online import OnlineLearner, enable_trace_learning
    >>> _ = torch.manual_seed(0); net = tt.Sequential(torch.nn.Linear(2, 4), tt.snn.LIB(4), torch.nn.Linear(4, 2), tt.snn.LI(2))
    >>> _ = enable_trace_learning(net)
    >>> learner = OnlineLearner(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    >>> result = learner.step(torch.rand(3, 2), torch.tensor([0, 1, 0]))
    >>> result.output.shape, result.loss > 0, learner.updates
    (torch.Size([3, 2]), True, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tracetorch.core.model import iter_layers

__all__ = ["OnlineLearner", "OnlineStep"]


@dataclass(frozen=True)
class OnlineStep:
    """What one online step produced: the (detached) output and the loss (None: no target)."""

    output: Tensor
    loss: float | None


class OnlineLearner:
    """Step-by-step training loop (see the module docstring).

    ``loss_fn(output, target)`` returns a scalar tensor (or None: no gradient at this step);
    ``update_every`` counts timesteps (an update with no gradient since the last one is
    skipped); ``clip_grad_norm`` clips the accumulated gradient before each update.
    ``backward(loss) -> bool`` and ``update() -> bool`` replace ``loss.backward()`` and the
    clip-and-step (a trainer passes its own, with mixed precision and a NaN policy; False
    from either drops the accumulated gradient and sets :attr:`skipped`). The layers
    whose states are detached are found once, here: build the learner after
    :func:`~tracetorch.online.enable_trace_learning` or any other change to the model.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        update_every: int = 1,
        clip_grad_norm: float | None = None,
        backward: Callable[[Tensor], bool] | None = None,
        update: Callable[[], bool] | None = None,
    ) -> None:
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"OnlineLearner: update_every must be a positive int, got {update_every!r}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"OnlineLearner: clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.update_every = update_every
        self.clip_grad_norm = clip_grad_norm
        self.backward = backward or self._backward
        self.update = update or self._update
        self.steps = 0
        self.updates = 0
        self.skipped = False
        self._pending = False
        self._layers = [layer for _, layer in iter_layers(model)]

    def step(self, x: Tensor, target: Tensor | None = None) -> OnlineStep:
        """One timestep of forward, backward (when ``target`` is given), detach, and update."""
        output = self.model(x)
        loss_value = None
        if target is not None:
            loss = self.loss_fn(output, target)
            if loss is not None and (not isinstance(loss, Tensor) or loss.ndim != 0):
                raise ValueError(f"OnlineLearner: loss_fn must return a scalar tensor, got {getattr(loss, 'shape', loss)!r}")
            if loss is not None and loss.requires_grad:
                if self.backward(loss):
                    self._pending = True
                else:
                    self._drop()
            loss_value = None if loss is None else loss.item()
        for layer in self._layers:
            layer.detach_states()
        self.steps += 1
        if self.steps % self.update_every == 0:
            self.flush()
        return OnlineStep(output.detach(), loss_value)

    def flush(self) -> bool:
        """Apply the gradient accumulated since the last update now; False if there was none."""
        if not self._pending:
            return False
        self._pending = False
        if not self.update():
            self._drop()
            return False
        self.updates += 1
        return True

    def _drop(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._pending = False
        self.skipped = True

    def _backward(self, loss: Tensor) -> bool:
        loss.backward()
        return True

    def _update(self) -> bool:
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return True

    def run(self, x_seq: Tensor, targets: Tensor | Sequence[Tensor | None] | None = None) -> tuple[Tensor, list[float | None]]:
        """:meth:`step` over ``x_seq`` ``[T, ...]`` with ``targets[t]`` (None: no loss at t).

        Returns the stacked detached outputs ``[T, ...]`` and the per-step losses.
        """
        if targets is not None and len(targets) != len(x_seq):
            raise ValueError(f"OnlineLearner.run: {len(targets)} targets for {len(x_seq)} timesteps")
        results = [self.step(x_t, None if targets is None else targets[t]) for t, x_t in enumerate(x_seq.unbind(0))]
        return torch.stack([r.output for r in results]), [r.loss for r in results]
