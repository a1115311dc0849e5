"""The run directory: one writer at a time, checked before training starts, write errors made clear.

* :class:`RunDirLock`: an exclusive ``fcntl`` lock on ``<run_dir>/.lock`` held for the whole
  run. The kernel releases it when the process dies (even by SIGKILL), so a killed run never
  leaves a stale lock; a second process gets a :class:`RunDirError` naming the holder's pid.
* :func:`unique_dir`: a fresh directory name, with a ``-1``, ``-2``, ... suffix when the
  name is taken (two runs started in the same second), created atomically.
* :func:`probe_writable` and :func:`writing`: an unwritable or full run dir is one
  :class:`RunDirError`, found before training starts.

Example:
    >>> import tempfile, pathlib
    >>> from tracetorch.training.rundir import RunDirLock, unique_dir
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> a, b = unique_dir(root / "run"), unique_dir(root / "run")
    >>> a.name, b.name
    ('run', 'run-1')
    >>> with RunDirLock(a):
    ...     RunDirLock(a).acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tracetorch.training.faults.RunDirError: run dir ... is in use by process ... (one run dir, one writer); ...
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracetorch.training.faults import RunDirError

__all__ = ["RunDirLock", "RunDirOwner", "unique_dir", "probe_writable", "writing", "LOCK_NAME"]

LOCK_NAME = ".lock"


class RunDirLock:
    """Exclusive, process-lifetime lock on a run dir (use as a context manager, or ``acquire``/``release``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise
            raise RunDirError(
                f"run dir {self.path.parent} is in use by process {holder} (one run dir, one writer); wait for it to "
                f"finish, stop it, or choose another run dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunDirOwner:
    """What a trainer does with its run dir: claim it (checked writable, locked) and let it go with its loggers."""

    _lock: RunDirLock | None = None

    def claim_run_dir(self, run_dir: Path, describe: Callable[[OSError], str] | None = None) -> None:
        probe_writable(run_dir, describe)
        self._lock = RunDirLock(run_dir).acquire()

    def close(self) -> None:
        """Close the loggers (``self.callbacks``) and release the run dir's lock; ``fit`` does it when it ends."""
        for callback in getattr(self, "callbacks", []):
            callback.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __del__(self) -> None:
        if self._lock is not None:
            self._lock.release()


def unique_dir(path: str | Path) -> Path:
    """Create ``path`` (or ``path-1``, ``path-2``, ... when taken) atomically and return it."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RunDirError(f"no free run dir name next to {base} (10,000 taken)")


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def probe_writable(run_dir: Path, describe: Callable[[OSError], str] | None = None) -> None:
    """Create ``run_dir`` and write a small file there, or raise :class:`RunDirError` saying why."""
    with writing(run_dir, describe):
        if run_dir.exists() and not run_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()


@contextmanager
def writing(target: Path, describe: Callable[[OSError], str] | None = None) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``target`` into one :class:`RunDirError` (``describe`` adds what is safe)."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        extra = describe(err) if describe is not None else "choose another run dir"
        raise RunDirError(f"cannot write {err.filename or target}: {reason} (errno {err.errno}); {extra}") from err


def leftover_pid(name: str, marker: str) -> int | None:
    """The pid in a ``.<step>.partial-<pid>`` / ``.old-<pid>`` name (None when there is none)."""
    tail = name.rpartition(marker)[2]
    return int(tail) if marker in name and tail.isdigit() else None


def owned_by_live_process(name: str, markers: tuple[str, ...]) -> bool:
    """Whether a hidden leftover's pid (another than ours) is still running: never touch those."""
    pids: list[Any] = [leftover_pid(name, m) for m in markers]
    return any(pid is not None and pid != os.getpid() and _is_alive(pid) for pid in pids)
