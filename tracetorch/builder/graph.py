"""Graph specs -> :class:`tracetorch.Graph`: checks, shape inference over the graph, the model, and back.

After :class:`~tracetorch.builder.blocks.Expander` has flattened blocks and includes,
every node's layer is validated with the chain schema, the wiring is checked (unknown
inputs, inputs per node, dangling nodes, cycles without a delay), shapes are inferred
on the meta device in dependency order (a node read through a delay gets its shape
when its producer has one), and the modules are made. Every problem is reported at
once with its YAML line, in the included file's lines when it comes from there.

Example:
    >>> import torch, tracetorch as tt
    >>> net = tt.build_model({"input_shape": [6], "output": "sum", "nodes": {
    ...     "fc": {"Linear": {"out_features": 6}}, "lif": {"LIB": {}},
    ...     "sum": {"add": {}, "from": ["lif", "input"]}}})
    >>> net.run(torch.rand(4, 2, 6)).shape
    torch.Size([4, 2, 6])
    >>> tt.build_model({"input_shape": [6], "output": "sum", "nodes": {
    ...     "fc": {"Linear": {"out_features": 5}}, "sum": {"add": {}, "from": ["fc", "input"]}}})
    Traceback (most recent call last):
    ...
    tracetorch.builder.errors.SpecError: 1 problem:
      nodes.sum: add of shapes that differ: fc gives [5] but input gives [6]
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracetorch.builder import shapes
from tracetorch.builder.blocks import Expander, FlatNode, IncludedFile, _close
from tracetorch.builder.build import (
    Device,
    Resolved,
    SpecWarning,
    _registered_problems,
    _validate,
    layer_to_entry,
    materialize,
    resolve_layer,
)
from tracetorch.builder.errors import Loc, SpecError, SpecIssue, format_loc
from tracetorch.core.graph import COMBINES, INPUT, SEW_FUNCTIONS, Graph, Node, cycle_without_delay

__all__ = ["GraphSpec", "build_graph", "graph_to_spec", "is_graph_document"]

Problems = list[tuple[Loc, str]]


def is_graph_document(data: Any) -> bool:
    """A mapping with ``nodes`` (a graph); chains have ``layers``."""
    return isinstance(data, dict) and "nodes" in data


@dataclass(frozen=True)
class GraphSpec:
    """A validated graph document (as written: blocks and includes kept); ``to_dict`` returns a copy."""

    document: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.document)


def issues(lines: dict[Loc, int], problems: Problems) -> list[SpecIssue]:
    """Problems -> issues with lines; locations inside included files start with the file's path."""
    out = []
    for loc, message in problems:
        line = next((lines[loc[:end]] for end in range(len(loc), -1, -1) if loc[:end] in lines), None)
        if loc and isinstance(loc[0], IncludedFile):
            where = f"{Path(loc[0].path).name}: {format_loc(loc[1:])}"
        else:
            where = format_loc(loc)
        out.append(SpecIssue(where, line, message))
    return out


def _line(lines: dict[Loc, int], loc: Loc) -> int | None:
    return next((lines[loc[:end]] for end in range(len(loc), 0, -1) if loc[:end] in lines), None)


class _Builder:
    def __init__(self, data: dict[str, Any], lines: dict[Loc, int], label: str | None, base_dir: Path | None) -> None:
        self.flat = Expander(data, lines, base_dir, label)
        self.lines = self.flat.lines
        self.problems: Problems = list(self.flat.problems)
        self.input_shape: shapes.Shape | None = None
        given = data.get("input_shape")
        if given is not None:
            if isinstance(given, list) and given and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in given):
                self.input_shape = tuple(given)
            else:
                self.problems.append((("input_shape",), f"input_shape must be a list of positive integers, got {given!r}"))
        self.name = data.get("name")
        if self.name is not None and not isinstance(self.name, str):
            self.problems.append((("name",), f"name must be a string, got {self.name!r}"))
        self.nodes = {n.name: n for n in self.flat.nodes}
        self.entries: dict[str, tuple[str, dict[str, Any]]] = {}

    def fail(self, node: FlatNode, loc: Loc, message: str) -> None:
        inside = f"in {node.name}: " if node.instance else ""
        self.problems.append((loc, inside + message))

    # ---- per node ----------------------------------------------------------------------

    def check_nodes(self) -> None:
        names = list(self.nodes)
        if len(names) != len(self.flat.nodes):
            seen: set[str] = set()
            for node in self.flat.nodes:
                if node.name in seen:
                    self.fail(node, node.loc, f"node '{node.name}' is defined twice (a block instance adds it too)")
                seen.add(node.name)
        for name in names:
            if any(other.startswith(name + ".") for other in names):
                self.fail(self.nodes[name], self.nodes[name].loc, f"'{name}' is a node and a group of nodes ({name}.*)")
        for node in self.flat.nodes:
            if node.name in self.flat.flawed:
                continue
            if node.kind in COMBINES:
                self._check_combine(node)
            else:
                self._check_layer(node)

    def _check_combine(self, node: FlatNode) -> None:
        loc, args = (*node.loc, node.kind), node.args if node.args is not None else {}
        allowed = {"concat": ("dim",), "sew": ("fn",)}.get(node.kind, ())
        if not isinstance(args, dict):
            self.fail(node, loc, f"the options of {node.kind} must be a mapping, got {args!r}")
            return
        for key in args:
            if key not in allowed:
                takes = f"; it takes {', '.join(allowed)}" if allowed else "; it takes none (write {})"
                self.fail(node, (*loc, key), f"{node.kind} has no option '{key}'{takes}")
        dim = args.get("dim", 0)
        if node.kind == "concat" and (isinstance(dim, bool) or not isinstance(dim, int)):
            self.fail(node, (*loc, "dim"), f"dim must be an integer (a per-sample dimension), got {dim!r}")
        if node.kind == "sew" and args.get("fn", "ADD") not in SEW_FUNCTIONS:
            self.fail(node, (*loc, "fn"), f"fn must be {', '.join(SEW_FUNCTIONS)}, got {args.get('fn')!r}")
        count = len(node.inputs)
        if node.kind == "sew" and count != 2:
            self.fail(node, node.from_loc, f"sew takes two inputs [A, S] (the block's spikes, the shortcut), got {count}")
        elif count < 2 and node.kind != "sew":
            self.fail(node, node.from_loc, f"{node.kind} combines two or more inputs, got {count}: list them in from")

    def _check_layer(self, node: FlatNode) -> None:
        document = {"layers": [{node.kind: node.args}]}
        spec, found = _validate(document)
        found += _registered_problems(document)
        for loc, message in found:
            rest = loc[2:] if loc[:2] == ("layers", 0) else loc
            if message.startswith(f"unknown layer '{node.kind}'"):
                close = _close(node.kind, [*COMBINES, *self.flat.blocks])
                message = f"unknown layer, combine op or block '{node.kind}'{close}" if close else message
            self.fail(node, (*node.loc, *rest), message)
        if spec is not None and not found:
            self.entries[node.name] = spec.entries()[0]
        if len(node.inputs) != 1 and not (found and found[0][0] == ("layers", 0)):  # not for an unknown kind
            self.fail(node, node.from_loc, f"a layer takes one input, got {len(node.inputs)}: combine them first "
                                           f"(add, mul, concat, sew)")

    def check_wiring(self) -> None:
        used = {e.node for n in self.flat.nodes for e in n.inputs}
        for node in self.flat.nodes:
            if node.name not in used and node.name != self.flat.output:
                self.fail(node, node.loc, f"node '{node.name}' is dangling: no node takes its output and it is not the output")
        loop = cycle_without_delay(self.graph_nodes())
        if loop:
            first = self.nodes[loop[0]]
            self.fail(first, first.loc, f"cycle without a delay: {' -> '.join(loop)}; make one of its edges delayed "
                                        f"({{node: {loop[-2]}, delay: 1}} in the from of {loop[-1]})")

    def graph_nodes(self) -> list[Node]:
        out = []
        for n in self.flat.nodes:
            options = dict(n.args or {}) if n.kind in COMBINES and isinstance(n.args, dict) else {}
            out.append(Node(n.name, tuple(n.inputs), n.kind if n.kind in COMBINES else "module", options))
        return out

    # ---- shapes ---------------------------------------------------------------------------

    def infer(self) -> tuple[dict[str, Resolved], dict[str, shapes.Shape | None]]:
        """Resolve every layer in dependency order; a node waits until its inputs' shapes are known."""
        known: dict[str, shapes.Shape | None] = {INPUT: self.input_shape}
        resolved: dict[str, Resolved] = {}
        failed: set[str] = set()
        pending = [n.name for n in self.flat.nodes]
        progress = True
        while pending and progress:
            progress = False
            for name in list(pending):
                node = self.nodes[name]
                inputs = [e.node for e in node.inputs]
                if any(i in failed for i in inputs):
                    failed.add(name)
                elif node.kind in COMBINES:
                    ready = [i for i in inputs if i in known]
                    if not ready or (node.kind == "concat" and len(ready) < len(inputs)):
                        continue
                    known[name] = self._combined(node, ready, known)
                    if known[name] is None and self.input_shape is not None:
                        failed.add(name)
                        del known[name]
                elif inputs[0] in known:
                    layer, found = resolve_layer(*self.entries[name], known[inputs[0]], (*node.loc, node.kind))
                    if found:
                        self.problems += [(loc, f"in {name}: {m}" if node.instance else m) for loc, m in found]
                        failed.add(name)
                    else:
                        assert layer is not None
                        resolved[name] = layer
                        known[name] = layer.output_shape
                else:
                    continue
                pending.remove(name)
                progress = True
        if pending and not failed:
            self.fail(self.nodes[pending[0]], self.nodes[pending[0]].loc,
                      f"cannot infer the input shape of {', '.join(pending)}: they wait on each other through a delay; "
                      f"give the sizes, or read the delayed node after a layer whose output shape is known")
        if not failed and not pending:
            for node in self.flat.nodes:  # recheck with every input known (delayed ones included)
                if node.kind in COMBINES:
                    self._combined(node, [e.node for e in node.inputs], known)
        return resolved, known

    def _combined(self, node: FlatNode, inputs: list[str], known: dict[str, shapes.Shape | None]) -> shapes.Shape | None:
        """The output shape of a combine node from the known input shapes; a problem when they do not combine."""
        given = [known[i] for i in inputs]
        if any(s is None for s in given):
            return None
        first = given[0]
        assert first is not None
        dim = (node.args or {}).get("dim", 0) if node.kind == "concat" else None
        for other, shape in zip(inputs[1:], given[1:]):
            assert shape is not None
            if node.kind != "concat" and shape != first:
                self.fail(node, node.loc, f"{node.kind} of shapes that differ: {self._gives(inputs[0], first)} but "
                                          f"{self._gives(other, shape)}")
                return None
            if node.kind == "concat":
                axis = dim if dim >= 0 else len(first) + dim
                if not 0 <= axis < len(first) or len(shape) != len(first) or any(
                        a != b for i, (a, b) in enumerate(zip(first, shape)) if i != axis):
                    self.fail(node, node.loc, f"concat along dim {dim}: {self._gives(inputs[0], first)} and "
                                              f"{self._gives(other, shape)}; sizes must match except at dim {dim}")
                    return None
        if node.kind == "concat":
            axis = dim if dim >= 0 else len(first) + dim
            return tuple(sum(s[axis] for s in given if s is not None) if i == axis else v for i, v in enumerate(first))
        return first

    def _gives(self, name: str, shape: shapes.Shape) -> str:
        if name == INPUT:
            return f"input gives {shapes.show(shape)}"
        line = _line(self.lines, self.nodes[name].loc)
        return f"{name} gives {shapes.show(shape)}" + (f" (line {line})" if line is not None else "")

    def raise_problems(self, label: str | None) -> None:
        if self.problems:
            found = issues(self.lines, _unique(self.problems))
            if label is not None:  # file order: included files after the spec, each by line
                found.sort(key=lambda i: (":" in i.location.split(".")[0], i.line or 0))
            raise SpecError(found, label)


def _unique(problems: Problems) -> Problems:
    return list(dict.fromkeys(problems))


def build_graph(data: dict[str, Any], lines: dict[Loc, int], label: str | None, base_dir: Path | None,
                device: Device = None) -> Graph:
    """Build a :class:`tracetorch.Graph` from a graph document (see :mod:`tracetorch.builder.blocks`)."""
    b = _Builder(data, lines, label, base_dir)
    b.check_nodes()
    if not b.problems:
        b.check_wiring()
    b.raise_problems(label)
    resolved, known = b.infer()
    delayed = {e.node for n in b.flat.nodes for e in n.inputs if e.delay}
    for name in sorted(delayed):
        if known.get(name) is None and not b.problems:  # the zeros of step 0 need the shape
            b.fail(b.nodes[name], b.nodes[name].loc, f"node '{name}' is read through a delay, so its output shape must be "
                                                     f"known: give the model an input_shape")
    b.raise_problems(label)
    order = [n.name for n in b.flat.nodes if n.name in resolved]
    modules, found = materialize([resolved[name] for name in order], device)
    b.problems += found
    b.raise_problems(label)
    assert b.flat.output is not None
    model = Graph(b.graph_nodes(), dict(zip(order, modules)), b.flat.output,
                  {name: known[name] for name in delayed})  # type: ignore[misc]
    model.input_shape = b.input_shape
    model.spec_name = b.name
    model.node_shapes = {name: known.get(name) for name in b.nodes}
    model.node_kinds = {n.name: n.kind for n in b.flat.nodes}
    model.spec_warnings = issues(b.lines, [w for layer in resolved.values() for w in layer.warnings])
    for issue in model.spec_warnings:
        warnings.warn(f"{label or 'spec'}: {issue}", SpecWarning, stacklevel=3)
    return model


# ---- model -> spec --------------------------------------------------------------------------


def graph_to_spec(model: Graph) -> GraphSpec:
    """A flat graph document (blocks expanded; dotted node names) that builds the same model."""
    nodes: dict[str, Any] = {}
    for node in model.graph_nodes:
        entry = layer_to_entry(model.module(node.name)) if node.op == "module" else {node.op: dict(node.options)}
        entry["from"] = [e.node if not e.delay else {"node": e.node, "delay": e.delay} for e in node.inputs]
        nodes[node.name] = entry
    doc: dict[str, Any] = {}
    if getattr(model, "spec_name", None) is not None:
        doc["name"] = model.spec_name
    if getattr(model, "input_shape", None) is not None:
        doc["input_shape"] = list(model.input_shape)
    doc["nodes"] = nodes
    doc["output"] = model.output
    return GraphSpec(doc)

