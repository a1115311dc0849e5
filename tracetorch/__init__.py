"""traceTorch: spiking neural networks for PyTorch, correct to the equation.

Example:
    >>> import torch, tracetorch as tt
    >>> layer = tt.snn.LIB(4)
    >>> layer(torch.ones(2, 4)).shape
    torch.Size([2, 4])
"""

from tracetorch import builder, functional, online, snn
from tracetorch.builder import build_model, load_spec
from tracetorch.core import Graph, Layer, Model, Sequential, StateFileError

__version__ = "0.20.0"

__all__ = [
    "builder", "build_model", "load_spec", "functional", "online", "snn", "Graph", "Layer", "Model", "Sequential",
    "StateFileError", "__version__",
]
