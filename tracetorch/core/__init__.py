"""Base classes: :class:`Layer` for layers, :class:`Model` for models."""

from tracetorch.core.layer import Layer
from tracetorch.core.model import Model, Sequential, iter_layers
from tracetorch.core.state_io import StateFileError

__all__ = ["Layer", "Model", "Sequential", "iter_layers", "StateFileError"]
