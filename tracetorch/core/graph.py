"""``tt.Graph``: a model whose modules form a directed graph (branches, residuals, delayed edges).

A graph is a list of :class:`Node` s. A node either applies a module to its one input or
combines several inputs (``add``, ``mul``, ``concat`` along a per-sample ``dim``, or a
SEW connect function ``sew`` with ``fn`` ``ADD`` / ``AND`` / ``IAND`` of ``[A, S]``:
``A + S``, ``A * S``, ``(1 - A) * S``). An :class:`Edge` with ``delay=1`` gives the
producer's output of the previous timestep (zeros at the first), held as the state
``prev`` of a :class:`Delay` layer, so the graph may loop through it. ``input`` names
the graph's input.

``forward(x)`` is one timestep. ``run(x_seq)`` runs a whole ``[T, ...]`` sequence: nodes
outside loops run once over the sequence (stateless modules fold time into the batch,
neuron layers use their fused paths, like :class:`tracetorch.Sequential`); the nodes of
a loop through a delay are stepped together. Both give the same outputs and states.

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.core.graph import Edge, Graph, Node
    >>> nodes = [Node("fc", (Edge("input"),), "module"), Node("lif", (Edge("fc"),), "module"),
    ...          Node("sum", (Edge("lif"), Edge("fc")), "add")]
    >>> net = Graph(nodes, {"fc": torch.nn.Linear(4, 4), "lif": tt.snn.LIB(4)}, output="sum")
    >>> net.run(torch.rand(6, 2, 4)).shape
    torch.Size([6, 2, 4])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.core.layer import Layer
from tracetorch.core.model import Model

__all__ = ["COMBINES", "SEW_FUNCTIONS", "Delay", "Edge", "Graph", "Node", "combine", "cycle_without_delay"]

INPUT = "input"
COMBINES = ("add", "mul", "concat", "sew")
SEW_FUNCTIONS = ("ADD", "AND", "IAND")


@dataclass(frozen=True)
class Edge:
    """An input of a node: the output of ``node`` now (``delay=0``) or at the previous step (``delay=1``)."""

    node: str
    delay: int = 0


@dataclass(frozen=True)
class Node:
    """``op`` is ``"module"`` (the module of the same name applied to the one input) or a combine name."""

    name: str
    inputs: tuple[Edge, ...]
    op: str = "module"
    options: Mapping[str, Any] = field(default_factory=dict)


def combine(op: str, options: Mapping[str, Any], tensors: Sequence[Tensor], lead: int) -> Tensor:
    """Apply a combine op; ``lead`` counts the dimensions before the per-sample ones (1: batch, 2: time and batch)."""
    if op == "add":
        out = tensors[0]
        for t in tensors[1:]:
            out = out + t
        return out
    if op == "mul":
        out = tensors[0]
        for t in tensors[1:]:
            out = out * t
        return out
    if op == "concat":
        dim = int(options.get("dim", 0))
        return torch.cat(list(tensors), dim=dim + lead if dim >= 0 else dim)
    if op == "sew":
        a, s = tensors
        fn = options.get("fn", "ADD")
        return a + s if fn == "ADD" else a * s if fn == "AND" else (1 - a) * s
    raise ValueError(f"unknown combine op {op!r}; ops are {', '.join(COMBINES)}")


class Delay(Layer):
    """A one-step delay: ``prev`` holds the producer's last output (a hidden state like a membrane)."""

    def __init__(self, shape: Sequence[int]) -> None:
        shape = tuple(int(s) for s in shape)
        super().__init__(shape[0] if len(shape) > 1 else shape[-1], -len(shape) if len(shape) > 1 else -1)
        self.shape = shape
        self.register_state("prev")

    def read(self, like: Tensor) -> Tensor:
        """``prev``, or zeros of shape ``[batch, *shape]`` (batch, dtype and device of ``like``) before the first write."""
        if self.prev is not None:
            return self.prev
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return torch.zeros(like.shape[0], *self.shape, dtype=dtype, device=like.device)

    def write(self, value: Tensor) -> None:
        self.set_state("prev", value)

    def forward(self, x: Tensor) -> Tensor:
        out = self.read(x)
        self.write(x)
        return out

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}"


class _Modules(nn.Module):
    """A container keyed by node name: any name works (``add``, ``train``: no attribute clashes)."""

    def put(self, dotted: str, module: nn.Module) -> None:
        head, _, rest = dotted.partition(".")
        if not rest:
            self._modules[head] = module
            return
        child = self._modules.get(head)
        if child is None:
            child = self._modules[head] = _Modules()
        assert isinstance(child, _Modules), f"node {head!r} is both a module and a group"
        child.put(rest, module)

    def get(self, dotted: str) -> nn.Module:
        node: nn.Module = self
        for part in dotted.split("."):
            node = node._modules[part]  # type: ignore[assignment]
        return node


def cycle_without_delay(nodes: Sequence[Node]) -> list[str] | None:
    """The first loop that has no delayed edge, as ``[a, b, ..., a]``; ``None`` when there is none."""
    known = {n.name: n for n in nodes}
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        colour[name] = 1
        stack.append(name)
        for edge in known[name].inputs:
            if edge.delay or edge.node not in known:
                continue
            if colour.get(edge.node) == 1:
                loop = stack[stack.index(edge.node):] + [edge.node]
                return loop[::-1]  # in data-flow order
            if edge.node not in colour and (found := visit(edge.node)):
                return found
        stack.pop()
        colour[name] = 2
        return None

    for node in nodes:
        if node.name not in colour and (found := visit(node.name)):
            return found
    return None


def _topological(nodes: Sequence[Node]) -> list[str]:
    """Node names in an order where every undelayed input comes first (spec order among equals)."""
    known = {n.name: n for n in nodes}
    done: set[str] = set()
    order: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for edge in known[name].inputs:
            if not edge.delay and edge.node in known:
                visit(edge.node)
        order.append(name)

    for node in nodes:
        visit(node.name)
    return order


def _loops(nodes: Sequence[Node], order: list[str]) -> list[list[str]]:
    """Strongly connected groups over all edges (delays included), in execution order; a loop is one group."""
    known = {n.name: n for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []

    def strong(name: str) -> None:  # Tarjan
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for edge in known[name].inputs:
            if edge.node not in known:
                continue
            if edge.node not in index:
                strong(edge.node)
                low[name] = min(low[name], low[edge.node])
            elif edge.node in on_stack:
                low[name] = min(low[name], index[edge.node])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            groups.append(group)

    for name in order:
        if name not in index:
            strong(name)
    position = {name: i for i, name in enumerate(order)}
    return [sorted(group, key=position.__getitem__) for group in groups]  # Tarjan emits producers first here


class Graph(Model):
    """A :class:`Model` running ``nodes`` in dependency order; ``output`` names the node it returns.

    ``modules`` maps the name of every ``"module"`` node to its module (parameter names are
    ``nodes.<name>.<parameter>``, dots in a node name nesting); ``delay_shapes`` gives the
    per-sample output shape of every node read through a delayed edge (the zeros of step 0).
    """

    def __init__(self, nodes: Sequence[Node], modules: Mapping[str, nn.Module], output: str,
                 delay_shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        super().__init__()
        self._nodes = {node.name: node for node in nodes}
        self._output = output
        names = set(self._nodes)
        for node in nodes:
            for edge in node.inputs:
                if edge.node != INPUT and edge.node not in names:
                    raise ValueError(f"node {node.name!r}: unknown input {edge.node!r}")
            if node.op == "module" and node.name not in modules:
                raise ValueError(f"node {node.name!r} has no module")
        if output not in names:
            raise ValueError(f"output {output!r} is not a node")
        loop = cycle_without_delay(nodes)
        if loop:
            raise ValueError(f"cycle without a delay: {' -> '.join(loop)}")
        self.nodes = _Modules()
        for node in nodes:
            if node.op == "module":
                self.nodes.put(node.name, modules[node.name])
        delayed = list(dict.fromkeys(e.node for n in nodes for e in n.inputs if e.delay))
        if delayed:
            missing = [name for name in delayed if name not in (delay_shapes or {})]
            if missing:
                raise ValueError(f"delay_shapes must give the shape of {', '.join(missing)} (read through a delay)")
            self.delays = _Modules()
            for name in delayed:
                self.delays.put(name, Delay(delay_shapes[name]))  # type: ignore[index]
        self._delayed = delayed
        self._order = _topological(nodes)
        self._groups = _loops(nodes, self._order)

    @property
    def graph_nodes(self) -> list[Node]:
        """The nodes, in spec order."""
        return list(self._nodes.values())

    @property
    def output(self) -> str:
        return self._output

    def module(self, name: str) -> nn.Module:
        """The module of node ``name``."""
        return self.nodes.get(name)

    def delay(self, name: str) -> Delay:
        """The delay holding the previous output of node ``name``."""
        return self.delays.get(name)  # type: ignore[return-value]

    def chain_after(self, name: str) -> list[nn.Module]:
        """The modules that node ``name`` feeds alone, in order: while a node's output goes (undelayed) to exactly
        one node and that node is a module node, follow it (a residual branch point ends the chain)."""
        chain: list[nn.Module] = []
        while True:
            readers = [n for n in self._nodes.values() if any(e.node == name for e in n.inputs)]
            if len(readers) != 1 or readers[0].op != "module" or any(e.delay for e in readers[0].inputs):
                return chain
            name = readers[0].name
            chain.append(self.module(name))

    def _apply_node(self, node: Node, inputs: list[Tensor], lead: int, whole: bool) -> Tensor:
        if node.op != "module":
            return combine(node.op, node.options, inputs, lead)
        module = self.module(node.name)
        if whole:
            from tracetorch.core.sequence import run

            return run(module, inputs[0])
        return module(inputs[0])

    def forward(self, x: Tensor) -> Tensor:
        previous = {name: self.delay(name).read(x) for name in self._delayed}
        values: dict[str, Tensor] = {INPUT: x}
        for name in self._order:
            node = self._nodes[name]
            inputs = [previous[e.node] if e.delay else values[e.node] for e in node.inputs]
            values[name] = self._apply_node(node, inputs, 1, whole=False)
        for name in self._delayed:
            self.delay(name).write(values[name])
        return values[self._output]

    def run(self, x_seq: Tensor) -> Tensor:
        """A whole sequence ``[T, ...]``; equals T calls of ``forward`` (outputs, states, gradients)."""
        if x_seq.ndim < 2:
            raise ValueError(f"run() expects a tensor of shape [T, B, ...], got {tuple(x_seq.shape)}")
        steps = x_seq.shape[0]
        initial = {name: self.delay(name).read(x_seq[0]) for name in self._delayed}
        seqs: dict[str, Tensor] = {INPUT: x_seq}
        shifted: dict[str, Tensor] = {}

        def delayed_seq(name: str) -> Tensor:  # the producer's sequence one step late
            if name not in shifted:
                shifted[name] = torch.cat([initial[name].unsqueeze(0), seqs[name][:-1]])
            return shifted[name]

        for group in self._groups:
            first = self._nodes[group[0]]
            looped = len(group) > 1 or any(e.node == first.name for e in first.inputs)
            if not looped:
                inputs = [delayed_seq(e.node) if e.delay else seqs[e.node] for e in first.inputs]
                seqs[first.name] = self._apply_node(first, inputs, 2, whole=True)
                continue
            self._step_group(group, seqs, initial, delayed_seq, steps)
        for name in self._delayed:
            self.delay(name).write(seqs[name][-1])
        return seqs[self._output]

    def _step_group(self, group: list[str], seqs: dict[str, Tensor], initial: dict[str, Tensor],
                    delayed_seq: Callable[[str], Tensor], steps: int) -> None:
        """Step the nodes of one loop together, reading everything outside it from whole sequences."""
        members = set(group)
        previous = {name: initial[name] for name in self._delayed if name in members}
        outputs: dict[str, list[Tensor]] = {name: [] for name in group}
        for t in range(steps):
            values: dict[str, Tensor] = {}
            for name in group:
                node = self._nodes[name]
                inputs = []
                for e in node.inputs:
                    if e.node in members:
                        inputs.append(previous[e.node] if e.delay else values[e.node])
                    else:
                        inputs.append(delayed_seq(e.node)[t] if e.delay else seqs[e.node][t])
                values[name] = self._apply_node(node, inputs, 1, whole=False)
                outputs[name].append(values[name])
            previous = {name: values[name] for name in previous}
        for name in group:
            seqs[name] = torch.stack(outputs[name])
