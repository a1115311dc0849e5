"""``SpecError``: every problem of a model spec, each with its location and YAML line.

A location is the path to the offending value written the way a user reads it,
``layers[3].LIB.alpha``; ``line`` is the 1-based line of that value in the YAML file
(``None`` for specs given as dicts).

Example:
    >>> from tracetorch.builder.errors import SpecError, SpecIssue
    >>> err = SpecError([SpecIssue("layers[1].LIB.alpha", 7, "LIB has no synaptic trace; SLIB has alpha")], "net.yaml")
    >>> print(err)
    1 problem in net.yaml:
      layers[1].LIB.alpha (line 7): LIB has no synaptic trace; SLIB has alpha
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Loc", "SpecIssue", "SpecError", "format_loc"]

Loc = tuple[str | int, ...]


def format_loc(loc: Loc) -> str:
    """``("layers", 3, "LIB", "alpha")`` -> ``"layers[3].LIB.alpha"``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<spec>"


@dataclass(frozen=True)
class SpecIssue:
    """One problem: where (``location``, ``line``) and why (``message``)."""

    location: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.location + (f" (line {self.line})" if self.line is not None else "")
        return f"{where}: {self.message}"


class SpecError(ValueError):
    """A model spec that cannot be built; ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[SpecIssue], source: str | None = None) -> None:
        self.errors: list[SpecIssue] = list(errors)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.errors)
        head = f"{count} problem{'s' if count != 1 else ''}" + (f" in {self.source}" if self.source else "") + ":"
        return "\n".join([head, *(f"  {issue}" for issue in self.errors)])

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.errors, self.source))


def issues_at(lines: dict[Loc, int], problems: Sequence[tuple[Loc, str]]) -> list[SpecIssue]:
    """Turn ``(loc, message)`` pairs into issues, each with the line of its closest known node."""
    out = []
    for loc, message in problems:
        line = None
        for end in range(len(loc), -1, -1):
            if loc[:end] in lines:
                line = lines[loc[:end]]
                break
        out.append(SpecIssue(format_loc(loc), line, message))
    return out
