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

from tracetorch.builder import SpecError, build_model
from tracetorch.builder.dot import write_picture
from tracetorch.builder.summary import graph_table, memory_note, summarize, summarize_graph, summary_table
from tracetorch.core.graph import Graph

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tt-validate", description="Validate traceTorch model spec files.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="model spec YAML files")
    parser.add_argument("--dot", metavar="DIR", help="write a Graphviz picture of each graph spec to DIR (.dot, .svg)")
    args = parser.parse_args(argv)
    out, err = Console(), Console(stderr=True, soft_wrap=True)
    status = 0
    for path in args.files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the warnings are printed below, with the table
                model = build_model(path, device="meta")
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
    return status


if __name__ == "__main__":
    sys.exit(main())
