"""``tt-validate FILE...``: check model specs; print a summary table per model, or every problem.

Exit status 0 when every file builds, 2 when any has problems (1 is left to Python crashes).
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from tracetorch.builder import SpecError, build_model, load_spec
from tracetorch.builder.summary import summarize, summary_table

__all__ = ["main"]


def _shape_for(path: str, shape: list[int] | None) -> list[int] | None:
    """``--input-shape`` for a file that has no ``input_shape`` of its own."""
    if shape is None:
        return None
    try:
        return shape if load_spec(path).input_shape is None else None
    except SpecError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tt-validate", description="Validate traceTorch model spec files.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="model spec YAML files")
    parser.add_argument("--input-shape", type=int, nargs="+", metavar="N",
                        help="the shape of one sample, for files without input_shape (e.g. configs/model/*: 1 28 28)")
    args = parser.parse_args(argv)
    out, err = Console(), Console(stderr=True, soft_wrap=True)
    status = 0
    for path in args.files:
        try:
            model = build_model(path, input_shape=_shape_for(path, args.input_shape))
        except SpecError as problem:
            status = 2
            err.print(f"[bold red]{path}[/]: {len(problem.errors)} problem{'s' * (len(problem.errors) != 1)}")
            for issue in problem.errors:
                where = f"{path}:{issue.line}" if issue.line is not None else path
                err.print(f"{where}: {issue.location}: {issue.message}", markup=False, highlight=False)
            continue
        out.print(summary_table(summarize(model), title=f"{path}: OK"))
    return status


if __name__ == "__main__":
    sys.exit(main())
