"""Turning expected user errors into one clear line on stderr and exit status 2 (130 for Ctrl-C)."""

from __future__ import annotations

import sys
from typing import NoReturn

from tracetorch.core.state_io import StateFileError
from tracetorch.training.faults import NonFiniteError, RunDirError

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, StateFileError, NonFiniteError, RunDirError, ImportError)


def fail(program: str, err: BaseException) -> NoReturn:
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(2)


def interrupted(program: str) -> NoReturn:
    print(f"{program}: interrupted", file=sys.stderr)
    sys.exit(130)
