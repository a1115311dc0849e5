"""Bernoulli spike trains from a counter-based hash: ``s[t, m] = 1 if u(seed, t*M + m) < p[m]``.

``u`` hashes the element's flat index (lowbias32, twice, keyed by a 64-bit ``seed``) to 24
bits in ``[0, 1)``. Every element is drawn independently of every other and of the thread
count, so the compiled CPU kernel (``events_cpu.cpp``) and the plain-PyTorch path here give
the same spikes bit for bit, on any device. The seed is drawn from a ``torch.Generator`` (or
the global one), so seeding the generator fixes the spikes; that is what makes a resumed
training run see the same inputs.

The draw costs a few integer operations per element: several times cheaper than
``torch.bernoulli`` on the CPU, where rate coding was a third of a small network's training step.

Example:
    >>> import torch
    >>> from tracetorch.kernels.spike_draws import bernoulli_spikes
    >>> s = bernoulli_spikes(torch.tensor([0.0, 0.5, 1.0]), steps=2000, seed=7)
    >>> s.shape, s[:, 0].sum().item(), s[:, 2].sum().item()
    (torch.Size([2000, 3]), 0.0, 2000.0)
    >>> 900 < s[:, 1].sum().item() < 1100
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from tracetorch.kernels import cpu, dispatch

__all__ = ["bernoulli_spikes", "draw_seed", "hash_uniforms"]

_MASK32 = 0xFFFFFFFF


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A 62-bit seed from ``generator`` (the global generator when ``None``)."""
    return int(torch.randint(0, 2**62, (), generator=generator, dtype=torch.int64))


def _mul32(x: Tensor, c: int) -> Tensor:
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_uniforms(count: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """The uniforms ``u(seed, i)`` for ``i < count`` (float32, multiples of ``2**-24`` in ``[0, 1)``)."""
    index = torch.arange(count, dtype=torch.int64, device=device)
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    h = _mix32(_mix32((index & _MASK32) ^ k0) ^ (index >> 32) ^ k1)
    return (h >> 8).to(torch.float32) * 2.0**-24


def bernoulli_spikes(p: Tensor, steps: int, seed: int) -> Tensor:
    """Spikes ``[steps, *p.shape]`` (``p``'s dtype), each 1 with probability ``p`` (in ``[0, 1]``).

    Raises:
        ValueError: when ``steps`` is negative.
    """
    if steps < 0:
        raise ValueError(f"bernoulli_spikes: steps must be >= 0, got {steps}")
    flat = p.reshape(-1)
    fast = flat.dtype == torch.float32 and flat.device.type == "cpu" and dispatch.wanted() != "reference"
    if fast and cpu.available():
        spikes = cpu.load().bernoulli_spikes(flat.contiguous(), steps, seed)
    else:
        u = hash_uniforms(steps * flat.numel(), seed, flat.device).view(steps, flat.numel())
        spikes = (u < flat.to(torch.float32)).to(p.dtype)
    return spikes.view(steps, *p.shape)
