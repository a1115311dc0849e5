"""The errors and the warning of :mod:`tracetorch.nir`, one class per kind of problem."""

from __future__ import annotations

__all__ = ["NIRError", "NIRExportError", "NIRImportError", "NIRFileError", "NIRResetWarning"]


class NIRError(ValueError):
    """Base class: something about a NIR graph or an export request is wrong (one clear message)."""


class NIRExportError(NIRError):
    """A model (or a layer in it) that ``to_nir`` cannot write exactly; the message names each layer."""


class NIRImportError(NIRError):
    """A NIR graph that ``from_nir`` cannot turn into a traceTorch model; the message names the node."""


class NIRFileError(NIRError):
    """A ``.nir`` file that cannot be read (missing, not HDF5, truncated, malformed); the message names the file."""


class NIRResetWarning(UserWarning):
    """NIR's LIF/CubaLIF reset to ``v_reset``; traceTorch layers subtract the threshold (they differ after a spike)."""
