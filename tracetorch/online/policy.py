"""Policy heads: turn a network's readout into an action distribution.

* :class:`CategoricalHead`: discrete actions, ``pi(a) = softmax(out / temperature)[a]``;
* :class:`GaussianHead`: continuous actions, ``a ~ N(out, std^2)`` per dimension (a fixed ``std``).

Sampling draws from the ``generator`` passed in only, so a learner that keeps one
generator (and saves its state) replays the same actions after a resume.

Example:
    >>> import torch
    >>> head = CategoricalHead()
    >>> out = torch.tensor([[0.0, 0.0, 10.0]])
    >>> head.greedy(out), round(float(head.log_prob(out, torch.tensor([2]))), 4)
    (tensor([2]), -0.0001)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["PolicyHead", "CategoricalHead", "GaussianHead", "make_head", "HEADS"]


class PolicyHead:
    """Base: ``sample``, ``greedy``, ``log_prob`` (summed over action dims) and ``entropy``, per batch row."""

    name = "policy"

    def check_outputs(self, out: Tensor, num_actions: int | None = None) -> None:
        """Raise ``ValueError`` unless ``out`` is ``[B, num_actions]``."""
        if out.ndim != 2:
            raise ValueError(f"{self.name} policy: the model's readout must be [batch, actions], got shape {tuple(out.shape)}")
        if num_actions is not None and out.shape[1] != num_actions:
            raise ValueError(
                f"{self.name} policy: the model gives {out.shape[1]} outputs but the action space has {num_actions} "
                f"{'actions' if isinstance(self, CategoricalHead) else 'dimensions'}"
            )

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def greedy(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob(self, out: Tensor, action: Tensor) -> Tensor:
        raise NotImplementedError

    def entropy(self, out: Tensor) -> Tensor:
        raise NotImplementedError


def _positive(value: object, what: str) -> float:
    """``value`` as a float, or ``ValueError`` naming ``what`` when it is not a number above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be > 0, got {value!r}")
    return float(value)


class CategoricalHead(PolicyHead):
    """Discrete actions: a softmax over the readout divided by ``temperature``."""

    name = "categorical"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = _positive(temperature, "categorical policy: temperature")

    def _log_probs(self, out: Tensor) -> Tensor:
        return torch.log_softmax(out / self.temperature, dim=-1)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        probs = self._log_probs(out.detach()).exp()
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def greedy(self, out: Tensor) -> Tensor:
        return out.detach().argmax(-1)

    def log_prob(self, out: Tensor, action: Tensor) -> Tensor:
        return self._log_probs(out).gather(-1, action.long().view(-1, 1)).squeeze(-1)

    def entropy(self, out: Tensor) -> Tensor:
        logp = self._log_probs(out)
        return -(logp.exp() * logp).sum(-1)


class GaussianHead(PolicyHead):
    """Continuous actions: ``N(out, std^2)`` independently per action dimension."""

    name = "gaussian"

    def __init__(self, std: float = 0.5) -> None:
        self.std = _positive(std, "gaussian policy: std")

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = out.detach()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.std * noise

    def greedy(self, out: Tensor) -> Tensor:
        return out.detach()

    def log_prob(self, out: Tensor, action: Tensor) -> Tensor:
        z = (action.to(out.dtype) - out) / self.std
        return (-0.5 * z * z - math.log(self.std) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self, out: Tensor) -> Tensor:
        per_dim = 0.5 + 0.5 * math.log(2 * math.pi) + math.log(self.std)
        return out.new_full(out.shape[:1], per_dim * out.shape[-1])


HEADS: dict[str, type[PolicyHead]] = {"categorical": CategoricalHead, "gaussian": GaussianHead}


def make_head(head: str | PolicyHead, **options: float) -> PolicyHead:
    """A head by name (``categorical``, ``gaussian``) with its options, or the head itself."""
    if isinstance(head, PolicyHead):
        return head
    if head not in HEADS:
        raise ValueError(f"unknown policy head {head!r} (known: {', '.join(HEADS)})")
    return HEADS[head](**options)
