"""A small graph executor: a :class:`tracetorch.Model` that runs any NIR-shaped graph of modules.

NIR semantics: a node's input is the sum of the outputs of the nodes with an edge into
it. Edges that close a cycle (found by a depth-first walk from the input node) carry the
source's output of the *previous* timestep, held by a :class:`Feedback` layer (a hidden
state like any membrane: zeroed, detached, saved and loaded with the model's states).
Acyclic graphs run whole sequences node by node (``model.run``), so traceTorch layers
use their fused sequence paths; graphs with cycles step.

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.nir.graph import GraphModel
    >>> net = GraphModel({"in": torch.nn.Identity(), "fc": torch.nn.Linear(3, 3), "lif": tt.snn.LIB(3),
    ...                   "out": torch.nn.Identity()},
    ...                  [("in", "fc"), ("fc", "lif"), ("lif", "fc"), ("lif", "out")], "in", "out", {"lif": (3,)})
    >>> net.back_edges
    [('lif', 'fc')]
    >>> net.run(torch.rand(5, 2, 3)).shape
    torch.Size([5, 2, 3])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tracetorch.core.layer import Layer
from tracetorch.core.model import Model
from tracetorch.kernels.sequence import run as run_module

__all__ = ["GraphModel", "Feedback", "ElementwiseAffine", "schedule"]


class Feedback(Layer):
    """The value carried by an edge that closes a cycle: its source's output one step earlier (zeros first)."""

    def __init__(self, shape: Sequence[int]) -> None:
        shape = tuple(int(s) for s in shape)
        if not shape:
            raise ValueError("Feedback: the shape of a recurrent edge must have at least one dimension")
        super().__init__(shape[0], dim=-len(shape))
        self.shape = shape
        self.register_state("value")

    def read(self, like: Tensor) -> Tensor:
        """The held value, or zeros shaped ``[batch, *shape]`` (batch, dtype and device of ``like``)."""
        if self.value is None:
            return torch.zeros(like.shape[0], *self.shape, dtype=like.dtype, device=like.device)
        return self.value

    def write(self, x: Tensor) -> None:
        object.__setattr__(self, "value", x)


class ElementwiseAffine(nn.Module):
    """``y = gain * x + offset`` elementwise over a sample (a NIR neuron's input gain and leak voltage).

    ``gain`` and ``offset`` have the per-sample shape (``[N]``, or ``[C, H, W]`` after a
    convolution) and broadcast over the leading batch and time dimensions.

    Example:
        >>> import torch
        >>> ElementwiseAffine(torch.tensor([2.0, 3.0]), torch.zeros(2))(torch.ones(1, 2))
        tensor([[2., 3.]])
    """

    def __init__(self, gain: Tensor, offset: Tensor) -> None:
        super().__init__()
        gain = torch.as_tensor(gain, dtype=torch.get_default_dtype())
        offset = torch.as_tensor(offset, dtype=torch.get_default_dtype())
        if gain.shape != offset.shape:
            raise ValueError(f"ElementwiseAffine: gain {tuple(gain.shape)} and offset {tuple(offset.shape)} differ in shape")
        self.register_buffer("gain", gain.clone())
        self.register_buffer("offset", offset.clone())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gain.to(x.dtype) + self.offset.to(x.dtype)

    def run(self, x_seq: Tensor) -> Tensor:
        """Elementwise, so a whole sequence ``[T, B, ...]`` is one call."""
        return self(x_seq)

    def extra_repr(self) -> str:
        return f"shape={list(self.gain.shape)}"


def schedule(names: Sequence[str], edges: Sequence[tuple[str, str]], start: str) -> tuple[list[str], list[tuple[str, str]]]:
    """``(order, back_edges)``: an execution order of the nodes reachable from ``start`` and the edges closing cycles.

    A depth-first walk from ``start`` marks every edge into a node still on the walk's
    stack as a back edge; the other edges form a DAG, ordered topologically (ties keep
    the order of ``names``). Nodes not reachable from ``start`` are an error.
    """
    succ: dict[str, list[str]] = {n: [] for n in names}
    for src, dst in edges:
        succ[src].append(dst)
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    back: list[tuple[str, str]] = []
    stack: list[tuple[str, int]] = [(start, 0)]
    state[start] = 1
    while stack:
        node, i = stack.pop()
        if i < len(succ[node]):
            stack.append((node, i + 1))
            nxt = succ[node][i]
            if state.get(nxt) == 1:
                back.append((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, 0))
        else:
            state[node] = 2
    unreachable = [n for n in names if n not in state]
    if unreachable:
        raise ValueError(f"nodes not reachable from the input {start!r}: {', '.join(map(repr, unreachable))}")
    forward = [e for e in edges if e not in back]
    indegree = {n: 0 for n in names}
    for _, dst in forward:
        indegree[dst] += 1
    order: list[str] = []
    ready = [n for n in names if indegree[n] == 0]
    while ready:
        node = ready.pop(0)
        order.append(node)
        for src, dst in forward:
            if src == node:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    return order, back


def _keys(names: Sequence[str]) -> dict[str, str]:
    """Module-safe, unique keys for node names (``nn.ModuleDict`` forbids dots)."""
    keys: dict[str, str] = {}
    for name in names:
        key = re.sub(r"\W", "_", name) or "node"
        while key in keys.values():
            key += "_"
        keys[name] = key
    return keys


class GraphModel(Model):
    """A :class:`~tracetorch.Model` running a graph of modules with NIR semantics (see the module docstring).

    ``shapes`` gives the per-sample output shape of every node whose output feeds a back
    edge (the zeros such an edge carries at the first step). ``input_shape`` is kept for
    re-export (:func:`tracetorch.nir.to_nir`).
    """

    def __init__(
        self,
        modules: dict[str, nn.Module],
        edges: Sequence[tuple[str, str]],
        input_name: str,
        output_name: str,
        shapes: dict[str, Sequence[int]] | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        names = list(modules)
        for src, dst in edges:
            for end in (src, dst):
                if end not in modules:
                    raise ValueError(f"edge ({src!r}, {dst!r}) names an unknown node {end!r}")
        for end in (input_name, output_name):
            if end not in modules:
                raise ValueError(f"unknown input/output node {end!r}")
        self.edges = [(str(s), str(d)) for s, d in edges]
        self.input_name, self.output_name = input_name, output_name
        self.input_shape = list(input_shape) if input_shape is not None else None
        self.order, self.back_edges = schedule(names, self.edges, input_name)
        self.keys = _keys(names)
        self.nodes = nn.ModuleDict({self.keys[n]: modules[n] for n in names})
        shapes = shapes or {}
        missing = sorted({s for s, _ in self.back_edges if s not in shapes})
        if missing:
            raise ValueError(f"the output shape of {', '.join(map(repr, missing))} is needed for its recurrent edge")
        edge_keys = _keys([f"{s}->{d}" for s, d in self.back_edges])
        self.feedback_keys = {(s, d): edge_keys[f"{s}->{d}"] for s, d in self.back_edges}
        self.feedback = nn.ModuleDict({k: Feedback(shapes[s]) for (s, _), k in self.feedback_keys.items()})
        self.preds = {n: [s for s, d in self.edges if d == n and (s, d) not in self.back_edges] for n in names}
        self.back_preds = {n: [(s, d) for s, d in self.back_edges if d == n] for n in names}

    def module(self, name: str) -> nn.Module:
        """The module of node ``name``."""
        return self.nodes[self.keys[name]]

    def forward(self, x: Tensor) -> Tensor:
        """One timestep."""
        values: dict[str, Tensor] = {}
        for name in self.order:
            if name == self.input_name:
                values[name] = self.module(name)(x)
                continue
            parts = [values[s] for s in self.preds[name]]
            parts += [self.feedback[self.feedback_keys[e]].read(x) for e in self.back_preds[name]]
            values[name] = self.module(name)(_sum(parts, name))
        for edge in self.back_edges:
            self.feedback[self.feedback_keys[edge]].write(values[edge[0]])
        return values[self.output_name]

    def run(self, x_seq: Tensor) -> Tensor:
        """A whole sequence ``[T, ...]``: node by node when the graph has no cycle, else step by step."""
        if self.back_edges:
            return torch.stack([self(x_t) for x_t in x_seq.unbind(0)])
        values: dict[str, Tensor] = {}
        for name in self.order:
            value = x_seq if name == self.input_name else _sum([values[s] for s in self.preds[name]], name)
            values[name] = run_module(self.module(name), value)
        return values[self.output_name]


def _sum(parts: list[Tensor], name: str) -> Tensor:
    if not parts:
        raise ValueError(f"node {name!r} has no input")
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total
