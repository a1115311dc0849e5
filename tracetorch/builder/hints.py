"""Short reasons for arguments a layer does not take: the builder's name for :mod:`tracetorch.snn.hints`.

The layer constructors and the builder share one hints module (:mod:`tracetorch.snn.hints`,
below the builder); this module keeps the builder's import path.

Example:
    >>> unknown_argument("LIB", "alpha")
    'LIB has no synaptic trace; SLIB has alpha'
"""

from tracetorch.snn.hints import unknown_argument

__all__ = ["unknown_argument"]
