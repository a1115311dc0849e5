"""NIR (Neuromorphic Intermediate Representation) export and import.

``to_nir(model, dt=1e-4, input_shape=...)`` -> ``nir.NIRGraph``; ``from_nir(graph_or_path)``
-> a :class:`tracetorch.Model`; ``read``/``write`` for ``.nir`` files. Needs the ``[nir]``
extra (``pip install "tracetorch[nir]"``). The mapping: :mod:`tracetorch.nir.neurons`.

Example:
    >>> import pathlib, tempfile, torch, warnings, tracetorch as tt
    >>> from tracetorch.nir import from_nir, to_nir, write
    >>> net = tt.Sequential(torch.nn.Linear(4, 3), tt.snn.LIB(3, quant_fn=tt.functional.round_ste()))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.nir"
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")         # the reset-mode note (NIRResetWarning)
    ...     _ = write(to_nir(net), path)
    >>> x = torch.rand(20, 2, 4) * 2
    >>> torch.equal(from_nir(path).run(x), net.run(x))
    True
"""

try:
    import h5py  # noqa: F401
    import nir  # noqa: F401
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"tracetorch.nir needs the optional NIR packages ({_err.name} is missing): "
                      "pip install 'tracetorch[nir]'") from None

from tracetorch.nir.errors import NIRError, NIRExportError, NIRFileError, NIRImportError, NIRResetWarning
from tracetorch.nir.export import DEFAULT_DT, check_exportable, to_nir
from tracetorch.nir.files import read, write
from tracetorch.nir.graph import ElementwiseAffine, Feedback, GraphModel
from tracetorch.nir.importer import from_nir, load_nir_model

__all__ = [
    "DEFAULT_DT", "ElementwiseAffine", "Feedback", "GraphModel", "NIRError", "NIRExportError", "NIRFileError",
    "NIRImportError", "NIRResetWarning", "check_exportable", "from_nir", "load_nir_model", "read", "to_nir", "write",
]
