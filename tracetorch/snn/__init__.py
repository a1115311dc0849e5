"""The 32 SNN layers, their grammar, and the traceTorch-compatible base-class aliases.

Example:
    >>> import tracetorch as tt
    >>> len(tt.snn.layer_names())
    32
    >>> tt.snn.parse("SRLIB").recurrent
    True
"""

from tracetorch.core import Layer as TTLayer
from tracetorch.core import Model as TTModel
from tracetorch.snn.grammar import Flags, layer_names, param_specs, parse, state_names
from tracetorch.snn.layer import NeuronLayer, describe
from tracetorch.snn.zoo import *  # noqa: F403
from tracetorch.snn.zoo import LAYERS


def get_layer_class(name: str) -> type[NeuronLayer]:
    """The class for a layer name; invalid names raise the grammar's ``ValueError``."""
    return LAYERS[parse(name).name]


__all__ = [
    "TTLayer", "TTModel", "Flags", "NeuronLayer", "LAYERS", "describe", "get_layer_class",
    "layer_names", "param_specs", "parse", "state_names", *LAYERS,
]
