"""Readouts: how a model's output sequence ``[T, B, C]`` becomes a loss and a prediction.

* ``mean``: cross-entropy of the time-averaged output ``mean_t out_t`` (rate readout);
* ``per_step``: the cross-entropy of every step, averaged over steps;
* ``last``: cross-entropy of the last step only.

Every readout predicts ``argmax`` of its logits. For online training the sequence is cut
into chunks and :meth:`Readout.chunk_loss` scores each chunk: for ``per_step`` and ``last``
the chunk losses add up to the full loss; ``mean`` scores each chunk's own time average,
weighted by its length. With one chunk every readout equals full BPTT exactly.

Example:
    >>> import torch
    >>> from tracetorch.training.readout import get_readout
    >>> out, y = torch.randn(6, 3, 4), torch.tensor([0, 1, 2])
    >>> r = get_readout("mean")
    >>> full = r.loss(out, y)
    >>> bool(torch.isclose(full, r.chunk_loss(out, y, 0, 6)))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F

__all__ = ["Readout", "get_readout", "READOUTS"]


@dataclass(frozen=True)
class Readout:
    """One readout rule, by name."""

    name: str

    def logits(self, out: Tensor) -> Tensor:
        """``[T, B, C] -> [B, C]``: what the prediction and the reported loss use."""
        return out[-1] if self.name == "last" else out.mean(0)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The loss of a whole output sequence."""
        if self.name == "per_step":
            steps, batch = out.shape[:2]
            return F.cross_entropy(out.reshape(steps * batch, -1).float(), y.repeat(steps))
        return F.cross_entropy(self.logits(out).float(), y)

    def chunk_loss(self, out: Tensor, y: Tensor, start: int, total: int) -> Tensor | None:
        """The loss of steps ``start .. start + len(out)`` of a ``total``-step sequence (None: no gradient here).

        ``mean`` weighs the chunk's own time average by ``len/total``, ``per_step`` sums
        the chunk's steps over ``total``, ``last`` only scores the chunk holding the last step.
        """
        steps = out.shape[0]
        if self.name == "last":
            return F.cross_entropy(out[-1].float(), y) if start + steps == total else None
        if self.name == "per_step":
            batch = out.shape[1]
            return F.cross_entropy(out.reshape(steps * batch, -1).float(), y.repeat(steps), reduction="sum") / (total * batch)
        return F.cross_entropy(out.mean(0).float(), y) * (steps / total)

    def correct(self, out: Tensor, y: Tensor) -> int:
        return int((self.logits(out).argmax(-1) == y).sum().item())


READOUTS = ("mean", "per_step", "last")


def get_readout(name: str) -> Readout:
    if name not in READOUTS:
        raise ValueError(f"unknown readout {name!r}; choose one of: {', '.join(READOUTS)}")
    return Readout(name)
