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
    "StateFileError", "load_trained", "__version__",
]


def __getattr__(name: str) -> object:
    """``tt.load_trained`` and ``tt.training`` load the training stack on first use (``import tracetorch`` stays light)."""
    if name == "load_trained":
        from tracetorch.training.resume import load_trained

        return load_trained
    if name == "training":
        import importlib

        return importlib.import_module("tracetorch.training")
    raise AttributeError(f"module 'tracetorch' has no attribute {name!r}")
