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

__all__ = ["load_yaml"]


def load_yaml(text: str) -> tuple[Any, dict[Loc, int], list[tuple[Loc, int, str]]]:
    """Parse ``text``; return ``(data, lines, problems)``.

    ``lines`` maps each path (``("layers", 2, "LIB", "beta")``) to its 1-based line.
    ``problems`` lists YAML syntax errors and duplicate keys as ``(loc, line, message)``;
    on a syntax error ``data`` is ``None``.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = ": ".join(p for p in (err.context, err.problem) if p)
        return None, {}, [((), line or 0, f"YAML syntax error: {reason}")]
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
