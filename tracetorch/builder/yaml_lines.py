"""Load YAML and remember the line of every key and list item (PyYAML nodes keep marks).

Example:
    >>> data, lines, problems = load_yaml("layers:\\n  - Flatten: {}\\n  - LIB:\\n      beta: 0.5\\n")
    >>> data["layers"][1]
    {'LIB': {'beta': 0.5}}
    >>> lines[("layers", 1, "LIB", "beta")]
    4
"""

from __future__ import annotations

from typing import Any

import yaml

from tracetorch.builder.errors import Loc

__all__ = ["load_yaml", "check_node_size", "MAX_VALUES", "MAX_DEPTH"]

MAX_VALUES = 100_000  # values a document may expand to through aliases (a "billion laughs" file expands to billions)
MAX_DEPTH = 100  # nesting levels


def load_yaml(text: str) -> tuple[Any, dict[Loc, int], list[tuple[Loc, int, str]]]:
    """Parse ``text``; return ``(data, lines, problems)``.

    ``lines`` maps each path (``("layers", 2, "LIB", "beta")``) to its 1-based line.
    ``problems`` lists YAML syntax errors and duplicate keys as ``(loc, line, message)``;
    on a syntax error ``data`` is ``None``.
    """
    try:
        loader = yaml.SafeLoader(text)  # the reader already refuses control characters
    except yaml.YAMLError as err:
        return None, {}, [((), 0, f"YAML error: {err}")]
    try:
        node = loader.get_single_node()
        if node is not None:
            check_node_size(node)
        data = loader.construct_document(node) if node is not None else None
    except ValueError as err:
        return None, {}, [((), 0, str(err))]
    except RecursionError:
        return None, {}, [((), 0, f"YAML error: nested too deeply (more than {MAX_DEPTH} levels)")]
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = ": ".join(p for p in (err.context, err.problem) if p)
        column = f" (column {mark.column + 1})" if mark is not None else ""
        return None, {}, [((), line or 0, f"YAML syntax error{column}: {reason}")]
    except yaml.YAMLError as err:
        return None, {}, [((), 0, f"YAML error: {err}")]
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    problems: list[tuple[Loc, int, str]] = []
    if node is not None:
        _walk(node, (), lines, problems)
    return data, lines, problems


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[tuple[Loc, int, str]]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(((*loc, key), line, f"duplicate key '{key}' (YAML keeps only the last one)"))
            seen.add(key)
            lines[(*loc, key)] = line
            _walk(value_node, (*loc, key), lines, problems)
            lines[(*loc, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), lines, problems)


def check_node_size(node: yaml.Node) -> int:
    """Count the values ``node`` expands to (aliases counted at every use); ``ValueError`` beyond the limits.

    Linear in the number of distinct nodes, so an alias bomb is refused before it is expanded; a long
    document without aliases (as many values as nodes) is not a bomb, whatever its length.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def measure(current: yaml.Node, depth: int) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            raise ValueError(f"YAML error: nested too deeply (more than {MAX_DEPTH} levels)")
        if key in open_nodes:
            raise ValueError("YAML error: an alias refers to a value that contains it (recursive structure)")
        open_nodes.add(key)
        if isinstance(current, yaml.MappingNode):
            children = [child for pair in current.value for child in pair]
        elif isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        else:
            children = []
        total = 1 + sum(measure(child, depth + 1) for child in children)
        if total > MAX_VALUES and total > 2 * (len(sizes) + 1):  # amplified by aliases, not merely a long document
            raise ValueError(f"YAML error: the document expands to more than {MAX_VALUES} values through aliases "
                             f"(&anchor/*alias); refusing it")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return measure(node, 0)
