"""Reading and writing ``{name: tensor}`` files safely: ``.safetensors`` or ``.pt``.

Writes go to a temporary file in the same folder and are moved into place with
``os.replace``, so a crash never leaves a half-written file under the real name.
Reads never unpickle arbitrary objects: ``.safetensors`` holds only tensors, and
``.pt`` files are read with ``torch.load(weights_only=True)``. Every failure is a
:class:`StateFileError` naming the file.

Example:
    >>> import torch, tempfile, os
    >>> from tracetorch.core.state_io import write_state_file, read_state_file
    >>> path = os.path.join(tempfile.mkdtemp(), "s.safetensors")
    >>> write_state_file(path, {"a.mem": torch.ones(2)})
    >>> read_state_file(path)["a.mem"]
    tensor([1., 1.])
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["StateFileError", "write_state_file", "read_state_file", "atomic_write"]

SUFFIXES = (".safetensors", ".pt", ".pth")


class StateFileError(ValueError):
    """A state or checkpoint file that cannot be read or does not fit the model."""


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise StateFileError(f"{path}: unknown file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    return suffix


def atomic_write(path: str | Path, write) -> None:  # type: ignore[no-untyped-def]
    """Call ``write(tmp_path)`` then move the result onto ``path`` in one step (mode 0666 less the umask)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:  # write() errors name no file
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_state_file(path: str | Path, states: dict[str, Tensor]) -> None:
    """Write ``states`` to ``path`` (format by suffix) atomically.

    The file is serialized in memory and written with plain file I/O, so a full disk or
    a size quota is an ``OSError`` naming the file (never a library-specific error).
    """
    path = Path(path)
    suffix = _suffix(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in states.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save

        data = save(tensors, metadata={"format": "tracetorch-states"})
    else:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        data = buffer.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write(path, write)


def read_state_file(path: str | Path) -> dict[str, Tensor]:
    """Read a ``{name: tensor}`` file; anything else is a :class:`StateFileError`."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise StateFileError(f"{path}: no such file")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every reader failure becomes one clear error
        kind = "safetensors" if suffix == ".safetensors" else "PyTorch (weights_only)"
        raise StateFileError(f"{path}: not a readable {kind} state file ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()):
        raise StateFileError(f"{path}: expected a mapping of names to tensors, got {type(data).__name__}")
    for name, value in data.items():
        stored = value.untyped_storage().nbytes()
        if value.numel() and stored < value.numel() * value.element_size():
            raise StateFileError(f"{path}: tensor {name!r} of shape {list(value.shape)} is a view backed by only {stored} "
                                 f"bytes (an expanded or overlapping tensor); state files hold plain tensors")
    return data
