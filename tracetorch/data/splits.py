"""``Splits``: a dataset as in-memory train/test tensors, the unit every data source returns.

Images are stored ``[N, C, H, W]`` (``uint8`` or float; see ``scale``) and encoded into
spike sequences per batch; sequence datasets are stored ``[N, T, ...]`` and go to the
model as ``[T, B, ...]`` without an encoder. Holding tensors (not a ``DataLoader``) keeps
the per-epoch order a pure function of ``(seed, epoch)``, which makes resumed runs exact.

Example:
    >>> import torch
    >>> from tracetorch.data.splits import Splits
    >>> s = Splits.from_tensors((torch.rand(8, 1, 4, 4), torch.arange(8) % 2), (torch.rand(4, 1, 4, 4), torch.arange(4) % 2))
    >>> s.input_shape, s.num_classes, s.sequence
    ((1, 4, 4), 2, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Part", "Splits"]


@dataclass
class Part:
    """One split: inputs ``x`` (``[N, ...]``) and integer labels ``y`` (``[N]``)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or not isinstance(self.y, Tensor):
            raise TypeError(f"a split needs tensors x and y, got {type(self.x).__name__} and {type(self.y).__name__}")
        if self.y.ndim != 1 or self.y.dtype.is_floating_point:
            raise ValueError(f"labels must be a 1-d integer tensor, got shape {tuple(self.y.shape)} dtype {self.y.dtype}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")
        self.y = self.y.long()

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Splits:
    """A train and a test :class:`Part` plus what the trainer needs to know about them.

    ``sequence``: samples are ``[T, ...]`` sequences fed as they are (no encoder).
    ``scale``: multiply ``x`` by this after converting to float (``1/255`` for bytes).
    """

    train: Part
    test: Part
    num_classes: int
    sequence: bool = False
    scale: float = 1.0
    name: str = "custom"
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one timestep of one sample (what ``model.input_shape`` must be)."""
        shape = tuple(self.train.x.shape[1:])
        return shape[1:] if self.sequence else shape

    @property
    def num_steps(self) -> int | None:
        """Sequence length for sequence datasets, else ``None`` (the encoder decides)."""
        return int(self.train.x.shape[1]) if self.sequence else None

    @classmethod
    def from_tensors(
        cls,
        train: tuple[Tensor, Tensor],
        test: tuple[Tensor, Tensor],
        *,
        num_classes: int | None = None,
        sequence: bool = False,
        scale: float = 1.0,
        name: str = "custom",
    ) -> Splits:
        """Build from ``(x, y)`` pairs; ``num_classes`` defaults to ``max(label) + 1``."""
        train_part, test_part = Part(*train), Part(*test)
        if tuple(train_part.x.shape[1:]) != tuple(test_part.x.shape[1:]):
            raise ValueError(
                f"train and test samples differ in shape: {tuple(train_part.x.shape[1:])} vs {tuple(test_part.x.shape[1:])}"
            )
        if num_classes is None:
            num_classes = int(torch.cat([train_part.y, test_part.y]).max().item()) + 1
        return cls(train_part, test_part, num_classes, sequence, scale, name)

    def batch(self, part: Part, index: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Float inputs and labels for the samples at ``index``, on ``device``.

        Sequences come back time-first (``[T, B, ...]``), images as ``[B, ...]``.
        """
        x = part.x[index].to(device=device, non_blocking=True).float()
        if self.scale != 1.0:
            x = x * self.scale
        if self.sequence:
            x = x.transpose(0, 1)
        return x, part.y[index].to(device=device, non_blocking=True)
