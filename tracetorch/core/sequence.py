"""The old import path of the sequence runner, which lives in :mod:`tracetorch.kernels.sequence`.

Kept so that existing ``from tracetorch.core.sequence import run`` lines keep working; new code
imports :mod:`tracetorch.kernels.sequence`. This module adds nothing of its own.

Example:
    >>> import torch
    >>> from tracetorch.core.sequence import run
    >>> run(torch.nn.Flatten(), torch.rand(5, 4, 2, 3)).shape
    torch.Size([5, 4, 6])
"""

from tracetorch.kernels.sequence import fold_time, is_time_foldable, run, step_through

__all__ = ["run", "step_through", "fold_time", "is_time_foldable"]
