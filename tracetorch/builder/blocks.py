"""Graph documents -> a flat list of nodes: blocks with parameters, instances, includes, ``from`` lists.

A graph spec names its nodes; each node is ``{Kind: {arguments}, from: inputs}`` where
``Kind`` is a layer, a combine op (``add``, ``mul``, ``concat``, ``sew``) or a block
defined under ``blocks`` (here or in an ``include`` d file). ``from`` is a name, a
``{node: name, delay: 1}`` mapping or a list of them; without it a node takes the node
written before it (the first takes ``input``). Inside a block, ``input`` is the
instance's input and ``$param`` is replaced by the instance's value of ``param``. An
instance ``res1`` of a block adds the nodes ``res1.<node>``; other nodes refer to it
as ``res1`` (its output node).

Example:
    >>> doc = {"blocks": {"Twice": {"params": {"width": None}, "nodes": {
    ...            "a": {"Linear": {"out_features": "$width"}}, "b": {"LIB": {}}}}},
    ...        "nodes": {"one": {"Twice": {"width": 8}}, "two": {"Twice": {"width": 4}}}, "output": "two"}
    >>> flat = Expander(doc, {}, None)
    >>> [(n.name, n.kind, n.args, [e.node for e in n.inputs]) for n in flat.nodes]  # doctest: +NORMALIZE_WHITESPACE
    [('one.a', 'Linear', {'out_features': 8}, ['input']), ('one.b', 'LIB', {}, ['one.a']),
     ('two.a', 'Linear', {'out_features': 4}, ['one.b']), ('two.b', 'LIB', {}, ['two.a'])]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from tracetorch.builder.errors import Loc, SpecError
from tracetorch.core.graph import COMBINES, INPUT, Edge
from tracetorch.suggest import close_matches, did_you_mean

__all__ = ["Block", "Expander", "FlatNode", "IncludedFile", "GRAPH_KEYS"]

GRAPH_KEYS = ("name", "input_shape", "nodes", "output", "blocks", "include")
BLOCK_KEYS = ("params", "nodes", "output")
INCLUDE_KEYS = ("blocks", "include")
_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ABSENT = object()


@dataclass(frozen=True)
class IncludedFile:
    """First element of a location inside an included file."""

    path: str


@dataclass
class Block:
    name: str
    params: dict[str, Any]  # name -> default (None: required)
    nodes: Any
    output: str | None
    loc: Loc


@dataclass
class FlatNode:
    """One node of the expanded graph; ``loc`` is where it is written, ``instance`` the block path it came from."""

    name: str
    kind: str
    args: Any
    inputs: list[Edge]
    loc: Loc
    instance: str = ""
    from_loc: Loc = field(default=())


def _close(word: str, options: list[str]) -> str:
    hint = did_you_mean(close_matches(word, options, n=2))
    return f"; {hint}" if hint else ""


def valid_name(name: Any, dotted: bool = False) -> bool:
    return isinstance(name, str) and all(_PART.match(p) for p in (name.split(".") if dotted else [name]))


class Expander:
    """Expand a graph document; ``nodes``, ``output``, ``lines`` (included files' lines too) and ``problems``."""

    def __init__(self, data: dict[str, Any], lines: dict[Loc, int], base_dir: Path | None, label: str | None = None) -> None:
        self.lines = dict(lines)
        self.problems: list[tuple[Loc, str]] = []
        self.blocks: dict[str, Block] = {}
        self.nodes: list[FlatNode] = []
        self.output: str | None = None
        self._layer_names = _layer_names()
        self._broken: set[str] = set()  # flat names of written nodes that could not be read (reported once)
        self.flawed: set[str] = set()  # nodes with a reported problem in their inputs or parameters (not checked further)
        self._loaded: set[Path] = set()
        for key in data:
            if key == "layers":
                self.problems.append((("layers",), "a spec has either layers (a chain) or nodes (a graph), not both"))
            elif key not in GRAPH_KEYS:
                hint = _close(str(key), list(GRAPH_KEYS)) or f"; a graph spec has {', '.join(GRAPH_KEYS)}"
                self.problems.append(((key,), f"unknown key '{key}'{hint}"))
        here = Path(label).resolve() if label else None
        self._includes(data.get("include"), ("include",), base_dir, [here] if here else [])
        self._blocks(data.get("blocks"), ("blocks",))
        outputs = self._scope(data.get("nodes"), ("nodes",), "", Edge(INPUT), {}, (), top=True)
        output = data.get("output", _ABSENT)
        if output is _ABSENT:
            self.problems.append(((), "a graph needs output: the name of the node whose output the model returns"))
        elif isinstance(output, str) and output in self._broken:
            pass  # its node is reported already
        elif not isinstance(output, str) or output not in outputs:
            hint = _close(str(output), list(outputs)) or f"; nodes: {', '.join(outputs) or 'none'}"
            self.problems.append((("output",), f"output '{output}' is not a node{hint}"))
        else:
            self.output = outputs[output]

    # ---- includes and block definitions ---------------------------------------------------

    def _includes(self, given: Any, loc: Loc, base_dir: Path | None, chain: list[Path]) -> None:
        if given is None:
            return
        items = [given] if isinstance(given, str) else given
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            self.problems.append((loc, f"include must be a file name or a list of file names, got {given!r}"))
            return
        from tracetorch.builder.build import read_document

        for index, item in enumerate(items):
            where = loc if isinstance(given, str) else (*loc, index)
            path = _find(item, base_dir)
            if path in chain:
                names = [p.name for p in chain[chain.index(path):]] + [path.name]
                self.problems.append((where, f"include cycle: {' -> '.join(names)}"))
                continue
            if path in self._loaded:  # included twice (a diamond): its blocks are already here
                continue
            self._loaded.add(path)
            try:
                data, lines = read_document(path)
            except SpecError as err:
                reason = err.errors[0].message if err.errors else "cannot read it"
                self.problems.append((where, f"include '{item}' ({path}): {reason}"))
                continue
            marker = IncludedFile(str(path))
            self.lines.update({(marker, *k): v for k, v in lines.items()})
            if not isinstance(data, dict):
                self.problems.append(((marker,), "an included file is a mapping with blocks (and include)"))
                continue
            for key in data:
                if key not in INCLUDE_KEYS:
                    self.problems.append(((marker, key), f"an included file holds only blocks and include, not '{key}'"))
            self._includes(data.get("include"), (marker, "include"), path.parent, [*chain, path])
            self._blocks(data.get("blocks"), (marker, "blocks"))

    def _blocks(self, given: Any, loc: Loc) -> None:
        if given is None:
            return
        if not isinstance(given, dict):
            self.problems.append((loc, "blocks must be a mapping {BlockName: {params: ..., nodes: ..., output: ...}}"))
            return
        for name, block in given.items():
            where = (*loc, name)
            if not valid_name(name):
                self.problems.append((where, f"a block name is a word (letters, digits, _), got {name!r}"))
            elif name in self._layer_names or name in COMBINES:
                what = "layer" if name in self._layer_names else "combine op"
                self.problems.append((where, f"block '{name}' has the name of a {what}"))
            elif name in self.blocks:
                self.problems.append((where, f"block '{name}' is defined twice"))
            elif not isinstance(block, dict):
                self.problems.append((where, "a block is a mapping with params, nodes and output"))
            else:
                for key in block:
                    if key not in BLOCK_KEYS:
                        self.problems.append(((*where, key), f"unknown key '{key}' in a block; a block has "
                                                             f"params, nodes and output"))
                params = block.get("params") or {}
                if not isinstance(params, dict) or not all(valid_name(p) for p in params):
                    self.problems.append(((*where, "params"), "params must be a mapping {name: default} (null: required)"))
                    params = {}
                output = block.get("output")
                if output is not None and not isinstance(output, str):
                    self.problems.append(((*where, "output"), f"output must be a node name, got {output!r}"))
                    output = None
                self.blocks[name] = Block(name, params, block.get("nodes"), output, where)

    # ---- node scopes ------------------------------------------------------------------------

    def _scope(self, nodes: Any, loc: Loc, prefix: str, source: Edge, params: dict[str, Any], stack: tuple[str, ...],
               top: bool = False) -> dict[str, str]:
        """Expand one ``nodes`` mapping; returns local name -> flat name of its output."""
        if not isinstance(nodes, dict) or not nodes:
            self.problems.append((loc, "nodes must be a non-empty mapping {name: {Kind: {arguments}, from: inputs}}"))
            return {}
        parsed = []
        written = set(nodes)
        for local, entry in nodes.items():
            where = (*loc, local)
            if not valid_name(local, dotted=top):
                self.problems.append((where, f"a node name is a word (letters, digits, _), got {local!r}"))
                continue
            if local == INPUT:
                self.problems.append((where, "'input' names the graph's input; choose another node name"))
                continue
            if not isinstance(entry, dict) or not [k for k in entry if k != "from"]:
                self.problems.append((where, "a node is a mapping {Kind: {arguments}, from: inputs}"))
                continue
            kinds = [k for k in entry if k != "from"]
            if len(kinds) != 1:
                self.problems.append((where, f"a node has one layer, combine op or block, got {', '.join(map(repr, kinds))}; "
                                             f"indent the arguments under '{kinds[0]}'"))
                continue
            kind = str(kinds[0])
            before = len(self.problems)
            args = self._substitute(entry[kinds[0]], params, (*where, kind), stack)
            parsed.append((local, kind, args, entry.get("from", _ABSENT), where, len(self.problems) > before))
        outputs = {local: prefix + local + self._block_output(kind, ()) for local, kind, *_ in parsed}
        self._broken |= {prefix + name for name in written if name not in outputs}
        previous: str | None = None
        for local, kind, args, given, where, flawed in parsed:
            before = len(self.problems)
            inputs = self._inputs(given, where, outputs, source, previous, prefix)
            previous = local
            if flawed or len(self.problems) > before:
                self.flawed.add(prefix + local)
            if kind in self.blocks:
                self._instance(kind, args, prefix + local, where, inputs, stack)
            else:
                self.nodes.append(FlatNode(prefix + local, kind, args, inputs, where, prefix.rstrip("."), (*where, "from")))
        return outputs

    def _block_output(self, kind: str, seen: tuple[str, ...]) -> str:
        """``.out`` (and deeper for nested instances) when ``kind`` is a block; ``""`` for a layer or op."""
        block = self.blocks.get(kind)
        if block is None or kind in seen or not isinstance(block.nodes, dict) or not block.nodes:
            return ""
        local = block.output if block.output in block.nodes else list(block.nodes)[-1]
        entry = block.nodes[local]
        inner = next((k for k in entry if k != "from"), "") if isinstance(entry, dict) else ""
        return f".{local}" + self._block_output(str(inner), (*seen, kind))

    def _inputs(self, given: Any, where: Loc, outputs: dict[str, str], source: Edge, previous: str | None,
                prefix: str) -> list[Edge]:
        loc = (*where, "from")
        if given is _ABSENT:
            return [Edge(outputs[previous])] if previous is not None else [source]
        items = given if isinstance(given, list) else [given]
        if not items:
            self.problems.append((loc, "from lists no inputs"))
        edges = []
        for item in items:
            name, delay = (item, 0) if isinstance(item, str) else (
                (item.get("node"), item.get("delay", 0)) if isinstance(item, dict) else (None, 0))
            if not isinstance(name, str) or (isinstance(item, dict) and set(item) - {"node", "delay"}):
                self.problems.append((loc, f"an input is a node name or {{node: name, delay: 1}}, got {item!r}"))
                continue
            if isinstance(delay, bool) or delay not in (0, 1):
                self.problems.append((loc, f"delay must be 0 or 1 (the previous step), got {delay!r}"))
                continue
            if name == INPUT:
                if source.delay + delay > 1:
                    self.problems.append((loc, "a delayed input of a block instance fed through a delayed edge: "
                                               "one delay per edge at most"))
                    continue
                edges.append(Edge(source.node, source.delay + delay))
            elif name in outputs:
                edges.append(Edge(outputs[name], delay))
            elif prefix + name in self._broken:
                continue  # a node already reported as broken
            else:
                known = [INPUT, *outputs]
                hint = _close(name, known) or f"; inputs can be {', '.join(known)}"
                self.problems.append((loc, f"unknown input '{name}'{hint}"))
        return edges

    def _instance(self, kind: str, args: Any, name: str, where: Loc, inputs: list[Edge], stack: tuple[str, ...]) -> None:
        block = self.blocks[kind]
        if kind in stack:
            self.problems.append((where, f"block '{kind}' uses itself: {' -> '.join([*stack, kind])}"))
            return
        if args is None:
            args = {}
        if not isinstance(args, dict):
            self.problems.append(((*where, kind), f"the parameters of block {kind} must be a mapping, got {args!r}"))
            return
        bad = False
        for key in args:
            if key not in block.params:
                takes = f"; it takes {', '.join(block.params)}" if block.params else "; it takes none"
                self.problems.append(((*where, kind, key), f"block {kind} has no parameter '{key}'"
                                      + (_close(str(key), list(block.params)) or takes)))
                bad = True
        for key, default in block.params.items():
            if default is None and args.get(key) is None:
                self.problems.append(((*where, kind), f"block {kind} needs {key}"))
                bad = True
        if len(inputs) != 1:
            self.problems.append(((*where, "from"), f"block {kind} takes one input, got {len(inputs)}"))
            bad = True
        if bad:
            return
        values = {**block.params, **args}
        self._scope(block.nodes, (*block.loc, "nodes"), name + ".", inputs[0], values, (*stack, kind))

    def _substitute(self, value: Any, params: dict[str, Any], loc: Loc, stack: tuple[str, ...]) -> Any:
        """``$name`` -> the value of parameter ``name`` (whole values only), recursively."""
        if isinstance(value, str) and value.startswith("$"):
            key = value[1:]
            if key in params:
                return params[key]
            if stack:
                takes = f"; block {stack[-1]} has {', '.join(params)}" if params else f"; block {stack[-1]} has no params"
                self.problems.append((loc, f"unknown parameter '{value}'{_close(key, list(params)) or takes}"))
            else:
                self.problems.append((loc, f"'{value}' outside a block: parameters exist only in blocks"))
            return None
        if isinstance(value, dict):
            return {k: self._substitute(v, params, (*loc, k), stack) for k, v in value.items()}
        if isinstance(value, list):
            return [self._substitute(v, params, (*loc, i), stack) for i, v in enumerate(value)]
        return value


def _find(name: str, base_dir: Path | None) -> Path:
    """An included file: next to the including file; for specs given as dicts, the working directory, then the shipped configs."""
    path = Path(name)
    if path.is_absolute():
        return path.resolve()
    if base_dir is not None:
        return (base_dir / path).resolve()
    here = Path.cwd() / path
    shipped = Path(str(files("tracetorch.configs"))) / "model" / path
    return (here if here.exists() or not shipped.exists() else shipped).resolve()


def _layer_names() -> set[str]:
    from tracetorch.builder import registry

    return set(registry.registered_names())
