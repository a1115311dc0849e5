"""A per-layer (or per-node) summary of a built model: output shape, parameters, hidden states, memory.

Example:
    >>> import tracetorch as tt
    >>> net = tt.build_model({"input_shape": [4], "layers": [{"Linear": {"out_features": 3}}, {"SLIB": {}}]})
    >>> [(r.name, r.output_shape, r.parameters, r.learnable, r.states) for r in summarize(net)]
    [('Linear', '[3]', 15, 15, 0), ('SLIB', '[3]', 12, 12, 6)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from rich.table import Table
from torch import nn

from tracetorch.builder import shapes
from tracetorch.core.graph import Graph
from tracetorch.core.layer import Layer

__all__ = ["LayerRow", "NodeRow", "memory_note", "summarize", "summarize_graph", "summary_table", "graph_table"]


@dataclass(frozen=True)
class LayerRow:
    """One layer: ``parameters`` counts neuron parameters held as buffers too; ``states`` is per sample."""

    index: int
    name: str
    output_shape: str
    parameters: int
    learnable: int
    states: int


def summarize(model: nn.Module) -> list[LayerRow]:
    """One row per top-level module, shapes traced from ``model.input_shape`` when known."""
    shape: shapes.Shape | None = getattr(model, "input_shape", None)
    meta = all(t.is_meta for t in (*model.parameters(), *model.buffers()))  # built for validation (or holds nothing)
    rows = []
    for index, module in enumerate(model.children()):
        if shape is not None:
            shape = shapes.output_shape(module, tuple(shape), type(module).__name__, "meta" if meta else None)
        count, learnable, states = _counts(module, shape)
        rows.append(LayerRow(index, type(module).__name__, shapes.show(shape), count, learnable, states))
    return rows


def _counts(module: nn.Module, shape: shapes.Shape | None) -> tuple[int, int, int]:
    """Parameters (neuron parameters held as buffers included), learnable ones, hidden state values per sample."""
    own = {id(p) for p in module.parameters()}
    count = sum(p.numel() for p in module.parameters())
    if isinstance(module, Layer):
        count += sum(getattr(module, f"raw_{n}").numel() for n in module.param_names()
                     if id(getattr(module, f"raw_{n}")) not in own)
    learnable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    states = len(module.state_names()) * math.prod(shape) if isinstance(module, Layer) and shape is not None else 0
    return count, learnable, states


@dataclass(frozen=True)
class NodeRow:
    """One graph node: its kind (layer, combine op, or ``delay``) and inputs (``name@t-1`` when delayed)."""

    name: str
    kind: str
    inputs: str
    output_shape: str
    parameters: int
    learnable: int
    states: int


def summarize_graph(model: Graph) -> list[NodeRow]:
    """One row per node of a built :class:`tracetorch.Graph`, then one per delay (its state is the held output)."""
    known = getattr(model, "node_shapes", {})
    rows = []
    for node in model.graph_nodes:
        shape = known.get(node.name)
        inputs = ", ".join(e.node + ("@t-1" if e.delay else "") for e in node.inputs)
        if node.op == "module":
            module = model.module(node.name)
            count, learnable, states = _counts(module, shape)
            kind = getattr(model, "node_kinds", {}).get(node.name, type(module).__name__)
        else:
            count = learnable = states = 0
            kind = node.op + (f" {node.options['fn']}" if "fn" in node.options else "") + (
                f" dim {node.options['dim']}" if "dim" in node.options else "")
        rows.append(NodeRow(node.name, kind, inputs, shapes.show(shape), count, learnable, states))
    for node in dict.fromkeys(e.node for n in model.graph_nodes for e in n.inputs if e.delay):
        shape = model.delay(node).shape
        rows.append(NodeRow(f"{node}@t-1", "delay", node, shapes.show(shape), 0, 0, math.prod(shape)))
    return rows


def graph_table(rows: list[NodeRow], title: str, caption: str | None = None) -> Table:
    """A rich table of graph ``rows`` with a total line."""
    table = Table(title=title, caption=caption)
    for column in ("node", "kind", "inputs", "output shape", "parameters", "learnable", "hidden states / sample"):
        table.add_column(column, justify="right" if column in ("parameters", "learnable", "hidden states / sample") else "left")
    for r in rows:
        table.add_row(r.name, r.kind, r.inputs, r.output_shape, f"{r.parameters:,}", f"{r.learnable:,}", f"{r.states:,}")
    table.add_section()
    table.add_row("total", "", "", "", f"{sum(r.parameters for r in rows):,}", f"{sum(r.learnable for r in rows):,}",
                  f"{sum(r.states for r in rows):,}")
    return table


def memory_note(model: nn.Module, states: int) -> str:
    """What the model needs: its parameters and buffers, and ``states`` hidden values per sample (default dtype)."""
    from tracetorch.builder.build import format_bytes

    held = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    per_state = torch.empty((), dtype=torch.get_default_dtype()).element_size()
    return (f"memory: parameters and buffers {format_bytes(held)}; hidden states {format_bytes(states * per_state)} "
            f"per sample (x batch size)")


def summary_table(rows: list[LayerRow], title: str, caption: str | None = None) -> Table:
    """A rich table of ``rows`` with a total line."""
    table = Table(title=title, caption=caption)
    for column in ("#", "layer", "output shape", "parameters", "learnable", "hidden states / sample"):
        table.add_column(column, justify="right" if column not in ("layer", "output shape") else "left")
    for r in rows:
        table.add_row(str(r.index), r.name, r.output_shape, f"{r.parameters:,}", f"{r.learnable:,}", f"{r.states:,}")
    table.add_section()
    table.add_row("", "total", "", f"{sum(r.parameters for r in rows):,}", f"{sum(r.learnable for r in rows):,}",
                  f"{sum(r.states for r in rows):,}")
    return table
