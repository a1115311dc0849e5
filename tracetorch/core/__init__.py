"""Base classes: :class:`Layer` for layers, :class:`Model` for models."""

from tracetorch.core.graph import Graph
from tracetorch.core.layer import Layer
from tracetorch.core.model import Model, Sequential, iter_layers
from tracetorch.core.state_io import StateFileError

__all__ = ["Graph", "Layer", "Model", "Sequential", "iter_layers", "StateFileError"]
