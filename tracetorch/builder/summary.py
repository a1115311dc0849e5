"""A per-layer summary of a built model: output shape, parameters and hidden states.

Example:
    >>> import tracetorch as tt
    >>> net = tt.build_model({"input_shape": [4], "layers": [{"Linear": {"out_features": 3}}, {"SLIB": {}}]})
    >>> [(r.name, r.output_shape, r.parameters, r.learnable, r.states) for r in summarize(net)]
    [('Linear', '[3]', 15, 15, 0), ('SLIB', '[3]', 12, 12, 6)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.table import Table
from torch import nn

from tracetorch.builder import shapes
from tracetorch.core.layer import Layer

__all__ = ["LayerRow", "summarize", "summary_table"]


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
    rows = []
    for index, module in enumerate(model.children()):
        if shape is not None:
            shape = shapes.output_shape(module, tuple(shape), type(module).__name__)
        own = {id(p) for p in module.parameters()}
        count = sum(p.numel() for p in module.parameters())
        if isinstance(module, Layer):
            count += sum(getattr(module, f"raw_{n}").numel() for n in module.param_names()
                         if id(getattr(module, f"raw_{n}")) not in own)
        learnable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        states = len(module.state_names()) * math.prod(shape) if isinstance(module, Layer) and shape is not None else 0
        rows.append(LayerRow(index, type(module).__name__, shapes.show(shape), count, learnable, states))
    return rows


def summary_table(rows: list[LayerRow], title: str) -> Table:
    """A rich table of ``rows`` with a total line."""
    table = Table(title=title)
    for column in ("#", "layer", "output shape", "parameters", "learnable", "hidden states / sample"):
        table.add_column(column, justify="right" if column not in ("layer", "output shape") else "left")
    for r in rows:
        table.add_row(str(r.index), r.name, r.output_shape, f"{r.parameters:,}", f"{r.learnable:,}", f"{r.states:,}")
    table.add_section()
    table.add_row("", "total", "", f"{sum(r.parameters for r in rows):,}", f"{sum(r.learnable for r in rows):,}",
                  f"{sum(r.states for r in rows):,}")
    return table
