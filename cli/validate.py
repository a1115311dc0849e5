"""``tt-validate FILE...``: check model specs; print a summary table per model, or every problem.

Specs are built on PyTorch's meta device: shapes and parameter counts are exact and no
parameter memory is allocated, so a spec of any size validates in well under a second.
``--dot DIR`` writes a picture of each graph spec (``DIR/<name>.dot``, and ``.svg`` when
Graphviz is installed).

Exit status 0 when every file builds, 2 when any has problems (1 is left to Python crashes).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from rich.console import Console
from tracetorch.cli.arguments import add_input_shape

from tracetorch.builder import SpecError, build_model
from tracetorch.builder.build import declared_input_shape
from tracetorch.builder.dot import write_picture
from tracetorch.builder.summary import graph_table, memory_note, summarize, summarize_graph, summary_table
from tracetorch.core.graph import Graph

__all__ = ["main"]


def _shape_for(path: str, shape: list[int] | None) -> list[int] | None:
    """``--input-shape`` for a file that has no ``input_shape`` of its own."""
    if shape is None:
        return None
    try:
        return shape if declared_input_shape(path) is None else None
    except SpecError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tt-validate", description="Validate traceTorch model spec files.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="model spec YAML files")
    add_input_shape(parser, "the shape of one sample, for files without input_shape (configs/model/*)")
    parser.add_argument("--nir", action="store_true", help="also say, per layer, whether it exports to NIR (tt-export)")
    parser.add_argument("--dot", metavar="DIR", help="write a Graphviz picture of each graph spec to DIR (.dot, .svg)")
    args = parser.parse_args(argv)
    out, err = Console(), Console(stderr=True, soft_wrap=True)
    status = 0
    for path in args.files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the warnings are printed below, with the table
                model = build_model(path, input_shape=_shape_for(path, args.input_shape), device="meta")
        except SpecError as problem:
            status = 2
            err.print(f"[bold red]{path}[/]: {len(problem.errors)} problem{'s' * (len(problem.errors) != 1)}")
            for issue in problem.errors:
                where = f"{path}:{issue.line}" if issue.line is not None else path
                err.print(f"{where}: {issue.location}: {issue.message}", markup=False, highlight=False)
            continue
        if isinstance(model, Graph):
            rows = summarize_graph(model)
            table = graph_table(rows, f"{path}: OK", memory_note(model, sum(r.states for r in rows)))
        else:
            layer_rows = summarize(model)
            table = summary_table(layer_rows, f"{path}: OK", memory_note(model, sum(r.states for r in layer_rows)))
        out.print(table)
        for issue in getattr(model, "spec_warnings", []):
            where = f"{path}:{issue.line}" if issue.line is not None else path
            out.print(f"[yellow]warning[/]: {where}: {issue.location}: {issue.message}", highlight=False)
        if args.dot and isinstance(model, Graph):
            for written in write_picture(model, Path(args.dot) / Path(path).stem):
                out.print(f"wrote {written}", highlight=False)
        if args.nir:
            status = max(status, _nir_table(out, err, path, build_model(path, input_shape=_shape_for(path, args.input_shape))))
    return status


def _nir_table(out: Console, err: Console, path: str, model: object) -> int:
    """Print each layer's NIR verdict (exact / approximate / refused, and why); 2 when the extra is missing."""
    try:
        from tracetorch.nir import NIRError, check_exportable
    except ImportError as problem:
        err.print(f"{path}: --nir: {problem}", markup=False, highlight=False)
        return 2
    from rich.table import Table

    try:
        verdicts = check_exportable(model)
    except NIRError as problem:
        err.print(f"{path}: --nir: {problem}", markup=False, highlight=False)
        return 2
    table = Table(title=f"{path}: NIR export")
    for column in ("layer", "type", "NIR", "why"):
        table.add_column(column)
    for where, layer, verdict, reason in verdicts:
        table.add_row(where, layer, verdict, reason)
    out.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
