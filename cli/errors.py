"""Turning expected user errors into one clear line on stderr and exit status 2 (130 for Ctrl-C)."""

from __future__ import annotations

import sys
from typing import NoReturn

from tracetorch.core.state_io import StateFileError
from tracetorch.training.faults import NonFiniteError, RunDirError

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, StateFileError, NonFiniteError, RunDirError, ImportError)


def one_line(err: BaseException) -> str:
    """The message of an expected error on one line; a model-file problem as ``file:line: location: message``."""
    from tracetorch.builder import SpecError

    if isinstance(err, SpecError) and err.errors:
        first = err.errors[0]
        where = err.source or "model spec"
        where = f"{where}:{first.line}" if first.line is not None else where
        more = f" (and {len(err.errors) - 1} more)" if len(err.errors) > 1 else ""
        return f"{where}: {first.location}: {first.message}{more}"
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)


def fail(program: str, err: BaseException) -> NoReturn:
    message = one_line(err)
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(2)


def interrupted(program: str) -> NoReturn:
    print(f"{program}: interrupted", file=sys.stderr)
    sys.exit(130)
