"""A Poisson clicks stream: trials back to back, no reset between them.

Each of ``batch_size`` independent streams is a run of trials of ``trial_steps`` steps. In
a trial one side (the label: 0 = left, 1 = right) clicks at the higher rate; each step the
two input channels (left, right) click with probability ``high`` or ``low`` (a Bernoulli
approximation of a Poisson process), the pair drawn per trial from ``rates``. The model
must say which side clicked more during the last ``decision_steps`` steps of each trial,
so it has to integrate evidence and let the previous trial fade (nothing is reset).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> s = clicks_stream(num_trials=3, batch_size=4, trial_steps=20, decision_steps=5, generator=g)
    >>> s.clicks.shape, s.labels.shape, int(s.decide.sum())
    (torch.Size([60, 4, 2]), torch.Size([60, 4]), 15)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ClicksStream", "clicks_stream"]

DEFAULT_RATES: tuple[tuple[float, float], ...] = ((0.4, 0.1), (0.3, 0.15), (0.25, 0.15))


class ClicksStream(NamedTuple):
    """``clicks`` ``[T, B, 2]`` (0/1), ``labels`` ``[T, B]`` (the trial's side), ``decide`` ``[T]`` (scored steps)."""

    clicks: Tensor
    labels: Tensor
    decide: Tensor


def clicks_stream(
    num_trials: int,
    batch_size: int,
    trial_steps: int = 40,
    decision_steps: int = 10,
    rates: Sequence[tuple[float, float]] = DEFAULT_RATES,
    generator: torch.Generator | None = None,
) -> ClicksStream:
    """``num_trials`` trials back to back for ``batch_size`` streams (call again to continue)."""
    for name, value in (("num_trials", num_trials), ("batch_size", batch_size), ("trial_steps", trial_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"clicks_stream: {name} must be a positive int, got {value!r}")
    if isinstance(decision_steps, bool) or not isinstance(decision_steps, int) or not 1 <= decision_steps <= trial_steps:
        raise ValueError(
            f"clicks_stream: decision_steps must be an int in [1, trial_steps={trial_steps}], got {decision_steps!r}"
        )
    table = torch.tensor(rates, dtype=torch.float32)
    if table.ndim != 2 or table.shape[1] != 2 or not ((table >= 0) & (table <= 1)).all() or not (table[:, 0] > table[:, 1]).all():
        raise ValueError(f"clicks_stream: rates must be (high, low) pairs with 0 <= low < high <= 1, got {rates!r}")
    side = torch.randint(0, 2, (num_trials, batch_size), generator=generator)
    pair = table[torch.randint(0, len(table), (num_trials, batch_size), generator=generator)]  # [N, B, 2]
    left = torch.where(side == 0, pair[..., 0], pair[..., 1])
    right = torch.where(side == 0, pair[..., 1], pair[..., 0])
    prob = torch.stack([left, right], dim=-1).repeat_interleave(trial_steps, dim=0)  # [N*L, B, 2]
    clicks = torch.bernoulli(prob, generator=generator)
    labels = side.repeat_interleave(trial_steps, dim=0)
    decide = (torch.arange(num_trials * trial_steps) % trial_steps) >= trial_steps - decision_steps
    return ClicksStream(clicks, labels, decide)
