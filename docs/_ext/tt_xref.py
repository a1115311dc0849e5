"""Cross-references to re-exported and short Python names.

Every object is documented once, in the module that defines it (``tracetorch.core.model.Model``).
A reference to a re-export (``tracetorch.Model``) links there when both paths import the
same object; a short name (``:class:`SpecError```) links when every documented object with
that last name is the same object. Anything else stays unresolved, and ``nitpicky`` reports it.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes

_KINDS = {
    "func": {"function", "method"}, "meth": {"method"}, "class": {"class", "exception"}, "exc": {"exception", "class"},
    "data": {"data", "attribute"}, "attr": {"attribute", "property"},
}


_PRIMARY = {"func": "function", "meth": "method", "class": "class", "exc": "exception", "data": "data", "attr": "attribute"}


def resolve(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    try:
        return _resolve(app, env, node, contnode)
    except RecursionError as err:
        raise RuntimeError(f"tt_xref: recursion while resolving {node.get('reftarget')!r}") from err


def _resolve(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", target):  # a rendered annotation (``list[int] | None``), not a name
        return None
    context = node.get("py:module")
    for path in ([f"{context}.{target}"] if context else []) + ([target] if "." in target else []):
        # a re-export (tracetorch.Model, or `train` inside tracetorch.training): link to where that object is documented
        wanted = _object_of(path)
        if wanted is None:
            continue
        domain = env.get_domain("py")
        last = path.rsplit(".", 1)[-1]
        same = [(n, e) for n, e in domain.objects.items() if n.rsplit(".", 1)[-1] == last and _object_of(n) == wanted]
        if same:
            name, entry = min(same, key=lambda m: (m[0].count("."), m[0]))
            return _link(app, node, entry, name, contnode)
    short = target.rsplit(".", 1)[-1]
    domain = env.get_domain("py")
    kinds = _KINDS.get(node.get("reftype", ""))
    matches = [(name, entry) for name, entry in domain.objects.items()
               if name.rsplit(".", 1)[-1] == short and (name == target or name.endswith("." + target))
               and (kinds is None or entry.objtype in kinds)]
    if not matches:
        return None
    if len({_object_of(name) for name, _ in matches}) > 1:  # `train`: prefer the function to a method of that name
        primary = _PRIMARY.get(node.get("reftype", ""))
        matches = [(name, entry) for name, entry in matches if entry.objtype == primary]
    objects = {_object_of(name) for name, _ in matches}
    if len(objects) != 1 or None in objects:
        return None
    name, entry = min(matches, key=lambda m: (m[0].count("."), m[0]))
    return _link(app, node, entry, name, contnode)


def _object_of(path: str) -> Any:
    """``id`` of the object a dotted path names (longest importable module, then attributes), or None."""
    import importlib

    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # noqa: BLE001 - not a module (or one that cannot import here)
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return id(obj)
    return None


def _link(app: Any, node: Any, entry: Any, name: str, contnode: Any) -> Any:
    ref = nodes.reference("", "", internal=True, reftitle=name)
    ref["refuri"] = app.builder.get_relative_uri(node["refdoc"], entry.docname) + "#" + entry.node_id
    ref.append(contnode)
    return ref


def setup(app: Any) -> dict[str, Any]:
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
