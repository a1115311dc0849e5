"""traceTorch: spiking neural networks for PyTorch, correct to the equation.

Example:
    >>> import torch, tracetorch as tt
    >>> layer = tt.snn.LIB(4)
    >>> layer(torch.ones(2, 4)).shape
    torch.Size([2, 4])
"""

from tracetorch import functional, snn
from tracetorch.core import Layer, Model, Sequential, StateFileError

__version__ = "0.20.0"

__all__ = ["functional", "snn", "Layer", "Model", "Sequential", "StateFileError", "__version__"]
