"""Command-line arguments that several ``tt-*`` commands share, spelled the same everywhere."""

from __future__ import annotations

import argparse
import re

__all__ = ["add_input_shape", "parse_shape"]


def parse_shape(tokens: list[str]) -> list[int]:
    """Sizes from ``1 28 28``, ``1,28,28`` or ``1x28x28`` (one or several tokens); positive whole numbers.

    Example:
        >>> parse_shape(["1", "28", "28"]), parse_shape(["1,28,28"]), parse_shape(["1x28x28"])
        ([1, 28, 28], [1, 28, 28], [1, 28, 28])
    """
    parts = [part for token in tokens for part in re.split(r"[,x\s]+", token.strip()) if part]
    if not parts or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected positive sizes like 1 28 28 or 1,28,28, got {' '.join(tokens)!r}")
    return [int(part) for part in parts]


class _Shape(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        try:
            setattr(namespace, self.dest, parse_shape(list(values)))  # type: ignore[call-overload]
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument {option_string}: {err}")


def add_input_shape(parser: argparse.ArgumentParser, help: str) -> None:
    """``--input-shape N [N ...]`` (also ``1,28,28``): the shape of one sample, as a list of ints (``None`` if absent)."""
    parser.add_argument("--input-shape", nargs="+", metavar="N", action=_Shape, help=f"{help} (e.g. 1 28 28)")
