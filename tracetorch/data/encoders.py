"""Spike encoders: intensities ``[B, ...]`` in ``[0, 1]`` -> sequences ``[T, B, ...]``.

* ``rate``: ``s_t ~ Bernoulli(clamp(gain * x, 0, 1))``, drawn fresh at every step (by a
  counter-based hash seeded from the generator: :mod:`tracetorch.kernels.spike_draws`);
* ``latency``: one spike per input at step ``round((1 - x) * (T - 1))`` (brighter is
  earlier); inputs below ``threshold`` never fire;
* ``direct``: the same analog current ``x`` at every step;
* ``events``: none, for event data already binned in time (sequence datasets skip the
  encoder; its ``num_steps`` sets the event data configs' ``n_time_bins``).

Randomness comes only from the ``generator`` passed in, so a trainer that seeds one per
batch gets the same spikes after a resume.

Example:
    >>> import torch
    >>> from tracetorch.data.encoders import make_encoder
    >>> enc = make_encoder({"name": "latency", "num_steps": 5})
    >>> enc(torch.tensor([[1.0, 0.5, 0.0]]))[:, 0].T
    tensor([[1., 0., 0., 0., 0.],
            [0., 0., 1., 0., 0.],
            [0., 0., 0., 0., 0.]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tracetorch.data.registry import Registry
from tracetorch.kernels.spike_draws import bernoulli_spikes, draw_seed

__all__ = ["rate", "latency", "direct", "events", "Encoder", "ENCODERS", "make_encoder"]

ENCODERS = Registry("encoder")


@ENCODERS.register("rate")
def rate(x: Tensor, num_steps: int, generator: torch.Generator | None = None, gain: float = 1.0) -> Tensor:
    """Bernoulli rate coding: each step an input fires with probability ``gain * x``."""
    p = (x * gain).clamp(0.0, 1.0)
    return bernoulli_spikes(p, num_steps, draw_seed(generator))


@ENCODERS.register("latency")
def latency(x: Tensor, num_steps: int, generator: torch.Generator | None = None, threshold: float = 0.01) -> Tensor:
    """Time-to-first-spike coding: one spike at ``round((1 - x) * (T - 1))``, none below ``threshold``."""
    times = ((1.0 - x.clamp(0.0, 1.0)) * (num_steps - 1)).round().long()
    steps = torch.arange(num_steps, device=x.device).view(num_steps, *([1] * x.ndim))
    return ((steps == times.unsqueeze(0)) & (x >= threshold).unsqueeze(0)).to(x.dtype)


@ENCODERS.register("direct")
def direct(x: Tensor, num_steps: int, generator: torch.Generator | None = None) -> Tensor:
    """Direct (current) coding: ``x`` itself at every step."""
    return x.unsqueeze(0).expand(num_steps, *x.shape)


@ENCODERS.register("events")
def events(x: Tensor, num_steps: int, generator: torch.Generator | None = None) -> Tensor:
    """For data already binned in time (``data=nmnist``, ``shd``, ...), which skips the encoder: an error on images.

    Its ``num_steps`` is where the event data configs take their number of time bins from.
    """
    raise ValueError("encoder 'events' is for datasets already binned in time (nmnist, shd, dvs_gesture, tonic), "
                     "which skip the encoder; this dataset gives images: choose encoder=rate, latency or direct")


@dataclass
class Encoder:
    """An encoder from config: ``name``, ``num_steps`` and the encoder's own options."""

    name: str
    num_steps: int
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fn = ENCODERS.get(self.name)
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"encoder {self.name!r}: num_steps must be a positive int, got {self.num_steps!r}")
        probe = torch.zeros(1)
        ENCODERS.call(self.name, {"x": probe, "num_steps": 1, **self.options})  # checks the option names now

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.fn(x, self.num_steps, generator, **self.options)


def make_encoder(config: dict[str, Any]) -> Encoder:
    """``{"name": "rate", "num_steps": 20, "gain": 1.0}`` -> :class:`Encoder`."""
    config = dict(config)
    if "name" not in config:
        raise ValueError(f"encoder config needs 'name' (one of: {', '.join(ENCODERS.names())})")
    name = config.pop("name")
    num_steps = config.pop("num_steps", 20)
    return Encoder(name, num_steps, config)
