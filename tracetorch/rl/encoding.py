"""Observations -> spike-encoder input: population coding, one-hot, then a spike encoder.

* :func:`population_code`: each value ``x_d`` in ``[low_d, high_d]`` drives ``n`` neurons
  with Gaussian receptive fields, ``exp(-((x_d - c_i) / w)^2 / 2)``, centres ``c_i``
  evenly spaced over the range (ends included), width ``w`` the spacing; values outside
  the range are clamped to it. The result is in ``[0, 1]``, ready for rate coding.
* :class:`ObservationEncoder`: a Gymnasium observation (``Box`` or ``Discrete``) ->
  ``[T, 1, features]`` through population coding (``Box``, when ``population`` is set),
  one-hot (``Discrete``) or the raw values, then an encoder of
  :mod:`tracetorch.data.encoders` (``direct``, ``rate``, ``latency``) over ``num_steps``
  network steps per environment step.

Example:
    >>> import torch
    >>> population_code(torch.tensor([[0.0, 1.0]]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]), 3)
    tensor([[1.0000, 0.6065, 0.1353, 0.1353, 0.6065, 1.0000]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tracetorch.data.encoders import make_encoder
from tracetorch.online.reflect import RLError
from tracetorch.rl.envs import require_gymnasium

__all__ = ["population_code", "ObservationEncoder"]


def population_code(x: Tensor, low: Tensor, high: Tensor, n: int) -> Tensor:
    """``[B, D]`` values -> ``[B, D * n]`` Gaussian receptive-field intensities in ``[0, 1]`` (dimension-major)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"population_code: n must be an int >= 2, got {n!r}")
    if not (high > low).all():
        raise ValueError(f"population_code: every high must exceed its low, got low={low.tolist()}, high={high.tolist()}")
    steps = torch.linspace(0.0, 1.0, n, dtype=x.dtype)
    centers = low.to(x.dtype).unsqueeze(-1) + (high - low).to(x.dtype).unsqueeze(-1) * steps  # [D, n]
    width = ((high - low).to(x.dtype) / (n - 1)).unsqueeze(-1)
    clamped = torch.maximum(torch.minimum(x, high.to(x.dtype)), low.to(x.dtype)).unsqueeze(-1)  # [B, D, 1]
    return torch.exp(-0.5 * ((clamped - centers) / width) ** 2).flatten(1)


class ObservationEncoder:
    """Encode one observation of ``space`` for the network (see the module docstring).

    ``bounds``: one ``[low, high]`` per observation dimension for population coding
    (default: the space's own bounds, which must then be finite). ``scale`` multiplies
    the features before the spike encoder (an input gain; keep 1 for ``rate``).
    """

    def __init__(
        self,
        space: Any,
        population: int | None = None,
        bounds: Sequence[Sequence[float]] | None = None,
        name: str = "direct",
        num_steps: int = 1,
        scale: float = 1.0,
        **options: Any,
    ) -> None:
        gym = require_gymnasium()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise RLError(f"the observation scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)
        self.encoder = make_encoder({"name": name, "num_steps": num_steps, **options})
        self.population = population
        if isinstance(space, gym.spaces.Discrete):
            if population is not None:
                raise RLError(f"population coding needs a Box observation space, got {space}")
            self.kind, self.num_features, self.n = "onehot", int(space.n), int(space.n)
            return
        if not isinstance(space, gym.spaces.Box):
            raise RLError(f"observation space {space} is not supported (Box or Discrete)")
        dims = int(np.prod(space.shape))
        if population is None:
            self.kind, self.num_features = "raw", dims
            return
        if isinstance(population, bool) or not isinstance(population, int) or population < 2:
            raise RLError(f"population must be an int >= 2 (neurons per observation dimension), got {population!r}")
        if bounds is None:
            low, high = space.low.reshape(-1).astype(np.float64), space.high.reshape(-1).astype(np.float64)
            infinite = [d for d in range(dims) if not (math.isfinite(low[d]) and math.isfinite(high[d]))]
            if infinite:
                raise RLError(f"observation dimensions {infinite} have infinite bounds in {space}: "
                              f"give bounds (one [low, high] per dimension) for population coding")
        else:
            table = np.asarray(bounds, dtype=np.float64)
            if table.shape != (dims, 2) or not np.isfinite(table).all() or not (table[:, 1] > table[:, 0]).all():
                raise RLError(f"bounds must be {dims} pairs [low, high] of finite numbers with low < high, got {bounds!r}")
            low, high = table[:, 0], table[:, 1]
        self.low = torch.tensor(low, dtype=torch.get_default_dtype())
        self.high = torch.tensor(high, dtype=torch.get_default_dtype())
        self.kind, self.num_features = "population", dims * population

    def features(self, obs: Any) -> Tensor:
        """One observation -> ``[1, num_features]`` (before the spike encoder)."""
        if self.kind == "onehot":
            out = torch.zeros(1, self.n)
            out[0, int(obs)] = 1.0
            return out
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32)).reshape(1, -1).to(torch.get_default_dtype())
        if not torch.isfinite(x).all():
            raise RLError(f"the environment returned a non-finite observation: {x.flatten().tolist()}")
        if self.kind == "raw":
            return x
        return population_code(x, self.low, self.high, self.population)  # type: ignore[arg-type]

    def __call__(self, obs: Any, generator: torch.Generator | None = None) -> Tensor:
        """One observation -> ``[num_steps, 1, num_features]``."""
        features = self.features(obs)
        return self.encoder(features if self.scale == 1.0 else features * self.scale, generator)
