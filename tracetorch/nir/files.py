"""Reading and writing ``.nir`` files (HDF5, through ``nir.read``/``nir.write``: nothing is unpickled).

Every way a file can be wrong (missing, not HDF5, truncated, a node NIR does not know,
fields missing or malformed) becomes one :class:`NIRFileError` naming the file.

Example:
    >>> import pathlib, tempfile
    >>> from tracetorch.nir import read
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "bad.nir"
    >>> _ = bad.write_bytes(b"not hdf5")
    >>> read(bad)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tracetorch.nir.errors.NIRFileError: .../bad.nir: not a NIR file (not readable as HDF5...)
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import nir

from tracetorch.nir.errors import NIRFileError

__all__ = ["read", "write"]


def _has_external_links(path: Path) -> str | None:
    """The first external or soft link in the file (a NIR file needs none; they could reach other files)."""
    found: list[str] = []
    with h5py.File(path, "r") as f:
        def visit(name: str, link: object) -> None:
            if not found and isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                found.append(name)
        f.visititems_links(visit)
    return found[0] if found else None


def read(path: str | os.PathLike) -> nir.NIRGraph:
    """The ``nir.NIRGraph`` stored in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise NIRFileError(f"{path}: no such file")
    try:
        link = _has_external_links(path)
    except OSError as err:
        raise NIRFileError(f"{path}: not a NIR file (not readable as HDF5: {err}; truncated or another format?)") from None
    if link is not None:
        raise NIRFileError(f"{path}: the HDF5 file holds a link {link!r} to other data; NIR files hold none")
    try:
        graph = nir.read(path)
    except OSError as err:
        raise NIRFileError(f"{path}: not a NIR file (not readable as HDF5: {err}; truncated or another format?)") from None
    except Exception as err:  # noqa: BLE001  nir raises KeyError/AssertionError/TypeError/ValueError on bad content
        detail = f"{type(err).__name__}: {err}"
        if isinstance(err, KeyError):
            detail = f"missing entry: {err.args[0] if err.args else ''}"
        raise NIRFileError(f"{path}: malformed NIR graph ({detail})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise NIRFileError(f"{path}: holds a single {type(graph).__name__} node, not a NIR graph")
    return graph


def write(graph: nir.NIRGraph, path: str | os.PathLike) -> Path:
    """Write ``graph`` to ``path`` (via a temporary file renamed into place); returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        nir.write(tmp, graph)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise NIRFileError(f"{path}: cannot write ({type(err).__name__}: {err})") from None
    return path
