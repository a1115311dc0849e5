"""The Poisson clicks accumulation task (Brunton, Botvinick & Brody, 2013).

Each trial has two click trains, left and right, drawn as Poisson processes: one side
clicks at ``high_rate``, the other at ``low_rate`` (Hz, chosen at random per trial), for
``num_steps`` steps of ``dt`` seconds; the count of clicks in one step is
``Poisson(rate * dt)``. The label is the side that clicked more in total (0 = left,
1 = right); tied trials are redrawn. A network must integrate the whole sequence to
answer: the task needs memory. Everything comes from one seed, so a split is
reproducible without storing it.

Example:
    >>> from tracetorch.data.clicks import poisson_clicks
    >>> x, y = poisson_clicks(4, num_steps=50, seed=0)
    >>> x.shape, bool(((x[:, :, 1].sum(1) > x[:, :, 0].sum(1)).long() == y).all())
    (torch.Size([4, 50, 2]), True)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["poisson_clicks"]


def poisson_clicks(
    num_samples: int,
    *,
    num_steps: int = 100,
    dt: float = 0.01,
    high_rate: float = 25.0,
    low_rate: float = 15.0,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """``num_samples`` trials: clicks ``[N, num_steps, 2]`` (left, right counts) and labels ``[N]``."""
    if num_samples < 1 or num_steps < 1:
        raise ValueError(f"poisson_clicks: num_samples and num_steps must be >= 1, got {num_samples} and {num_steps}")
    if not 0 <= low_rate < high_rate:
        raise ValueError(f"poisson_clicks: need 0 <= low_rate < high_rate, got low_rate={low_rate}, high_rate={high_rate}")
    if dt <= 0:
        raise ValueError(f"poisson_clicks: dt must be > 0, got {dt}")
    gen = torch.Generator().manual_seed(int(seed))
    clicks = torch.empty(num_samples, num_steps, 2)
    pending = torch.arange(num_samples)
    for _ in range(1000):
        n = len(pending)
        high_side = torch.randint(0, 2, (n,), generator=gen)
        rates = torch.full((n, 2), float(low_rate))
        rates[torch.arange(n), high_side] = float(high_rate)
        draw = torch.poisson((rates * dt).unsqueeze(1).expand(n, num_steps, 2).contiguous(), generator=gen)
        clicks[pending] = draw
        totals = draw.sum(1)
        pending = pending[totals[:, 0] == totals[:, 1]]
        if len(pending) == 0:
            break
    else:
        raise ValueError("poisson_clicks: could not avoid tied trials; increase num_steps or the rate difference")
    totals = clicks.sum(1)
    return clicks, (totals[:, 1] > totals[:, 0]).long()
