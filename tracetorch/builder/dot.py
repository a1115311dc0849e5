"""A picture of a :class:`tracetorch.Graph`: Graphviz DOT text, and SVG when the ``dot`` program is installed.

Nodes show their name, kind and output shape; delayed edges are dashed and labelled ``t-1``.

Example:
    >>> import tracetorch as tt
    >>> net = tt.build_model({"input_shape": [4], "output": "sum", "nodes": {
    ...     "fc": {"Linear": {"out_features": 4}}, "sum": {"add": {}, "from": ["fc", "input"]}}}, device="meta")
    >>> print(graph_to_dot(net))  # doctest: +NORMALIZE_WHITESPACE
    digraph model {
      rankdir=TB; node [shape=box, style=rounded, fontname=Helvetica];
      "input" [label="input\\n[4]", shape=oval];
      "fc" [label="fc\\nLinear\\n[4]"];
      "sum" [label="sum\\nadd\\n[4]", shape=ellipse];
      "input" -> "fc";
      "fc" -> "sum";
      "input" -> "sum";
      "sum" -> "output";
      "output" [shape=oval];
    }
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tracetorch.builder import shapes
from tracetorch.core.graph import Graph

__all__ = ["graph_to_dot", "write_picture"]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def graph_to_dot(model: Graph) -> str:
    """The DOT text of ``model``'s nodes and edges."""
    known = getattr(model, "node_shapes", {})
    kinds = getattr(model, "node_kinds", {})
    lines = ["digraph model {", "  rankdir=TB; node [shape=box, style=rounded, fontname=Helvetica];"]
    first = _quote("input\n" + shapes.show(getattr(model, "input_shape", None)))
    lines.append(f'  "input" [label={first}, shape=oval];')
    for node in model.graph_nodes:
        kind = kinds.get(node.name, node.op) if node.op == "module" else node.op
        label = "\n".join([node.name, kind, shapes.show(known.get(node.name))])
        extra = ", shape=ellipse" if node.op != "module" else ""
        lines.append(f"  {_quote(node.name)} [label={_quote(label)}{extra}];")
    for node in model.graph_nodes:
        for edge in node.inputs:
            style = ' [style=dashed, label="t-1"]' if edge.delay else ""
            lines.append(f"  {_quote(edge.node)} -> {_quote(node.name)}{style};")
    lines += [f"  {_quote(model.output)} -> \"output\";", '  "output" [shape=oval];', "}"]
    return "\n".join(lines)


def write_picture(model: Graph, stem: str | Path) -> list[Path]:
    """Write ``<stem>.dot`` and, when Graphviz's ``dot`` is on the PATH, ``<stem>.svg``; returns the files written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    dot_file = stem.with_suffix(".dot")
    dot_file.write_text(graph_to_dot(model) + "\n", encoding="utf-8")
    written = [dot_file]
    program = shutil.which("dot")
    if program:
        svg = stem.with_suffix(".svg")
        subprocess.run([program, "-Tsvg", str(dot_file), "-o", str(svg)], check=True, capture_output=True, timeout=60)
        written.append(svg)
    return written
