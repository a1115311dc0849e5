"""Pydantic validation errors -> ``(location, short reason)`` in the spec's own words.

Pydantic reports the path through its schema (union tags included) and a generic
message; this module strips the schema's internals from the path, merges the
per-branch errors of one union value into one, and writes the reason a user of the
YAML file needs ("unknown layer 'SDLIB': prefixes go in the order D, S, R; did you
mean 'DSLIB'?").
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import ValidationError

from tracetorch.builder import registry, schema
from tracetorch.builder.errors import Loc
from tracetorch.builder.hints import unknown_argument

__all__ = ["translate"]

_TOP_KEYS = ("name", "input_shape", "layers")


def translate(error: ValidationError, prefix: Loc = ()) -> list[tuple[Loc, str]]:
    """One ``(loc, message)`` per problem, in document order, duplicates merged."""
    found: dict[Loc, list[dict[str, Any]]] = {}
    for item in error.errors(include_url=False):
        loc = _clean(tuple(item["loc"]), prefix)
        found.setdefault(_field_key(loc), []).append({**item, "loc": loc})
    out = []
    for key, items in found.items():
        if len(items) > 1 and _is_layer_arg(key):
            out.append((key, _union_message(key, items[0]["input"])))
        else:
            out += [(item["loc"], _message(item)) for item in items]
    return out


def _clean(loc: Loc, prefix: Loc) -> Loc:
    """Drop union tags: ``layers.3.LIB.LIB.beta`` -> ``layers.3.LIB.beta``."""
    loc = prefix + loc
    if len(loc) >= 3 and loc[0] == "layers" and isinstance(loc[1], int):
        rest = loc[2:]
        if len(rest) >= 2 and rest[0] in (rest[1], schema.REGISTERED_TAG):
            rest = rest[1:]
        if rest and rest[0] == schema.REGISTERED_TAG:
            rest = rest[1:]
        loc = loc[:2] + rest
    return loc


def _is_layer_arg(loc: Loc) -> bool:
    return len(loc) == 4 and loc[0] == "layers"


def _field_key(loc: Loc) -> Loc:
    return loc[:4] if _is_layer_arg(loc[:4]) else loc


def _union_message(loc: Loc, value: Any) -> str:
    layer, arg = str(loc[2]), str(loc[3])
    try:
        field = schema.args_model(layer).model_fields[arg]
        words = _type_words(field.annotation)
    except (KeyError, registry.UnknownNameError):
        words = "a valid value"
    return f"{arg} must be {words}, got {_show(value)}"


def _type_words(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        words = list(dict.fromkeys(_type_words(a) for a in typing.get_args(tp)))
        if "a number" in words and "an integer" in words:
            words.remove("an integer")
        return " or ".join(words)
    if origin is typing.Annotated:
        return _type_words(typing.get_args(tp)[0])
    if origin is list:
        items = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
        args = typing.get_args(tp)
        inner = typing.get_args(args[0])[0] if args and typing.get_origin(args[0]) is typing.Annotated else (args or [None])[0]
        return f"a list of {items.get(inner, 'values')}"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}.get(tp, "a value")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _layer_of(loc: Loc) -> str | None:
    return str(loc[2]) if len(loc) >= 3 and loc[0] == "layers" else None


def _message(item: dict[str, Any]) -> str:
    kind, loc, value, ctx = item["type"], item["loc"], item.get("input"), item.get("ctx") or {}
    layer = _layer_of(loc)
    key = loc[-1] if loc else ""
    if kind == "union_tag_invalid":
        return registry.unknown_layer_message(str(ctx.get("tag")))
    if kind == "union_tag_not_found":
        return _entry_shape_message(value)
    if kind == "extra_forbidden":
        if layer is not None and len(loc) == 4:
            try:
                allowed = list(schema.args_model(layer).model_fields)
            except registry.UnknownNameError:
                allowed = []
            return unknown_argument(layer, str(key), allowed)
        if len(loc) == 1:
            return unknown_argument("the spec", str(key), _TOP_KEYS).replace("the spec has no argument", "unknown key")
        return f"unknown key '{key}'"
    if kind == "missing":
        if loc == ("layers",):
            return "the spec has no 'layers' list"
        return f"{layer} needs {key}" if layer and len(loc) == 4 else f"missing '{key}'"
    if kind == "value_error":
        return str(ctx.get("error", item["msg"]))
    if kind in ("model_type", "dict_type", "model_attributes_type") and layer is not None and len(loc) == 3:
        return f"the arguments of {layer} must be a mapping {{argument: value}}, got {_show(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type") and not loc:
        return f"a spec must be a mapping with 'layers', got {_show(value)}"
    if kind == "too_short" and loc == ("layers",):
        return "layers must list at least one layer"
    words = {
        "int_type": "an integer", "bool_type": "true or false", "string_type": "a string", "list_type": "a list",
        "float_type": "a number", "int_from_float": "an integer", "dict_type": "a mapping", "model_type": "a mapping",
    }.get(kind)
    if words:
        return f"{key} must be {words}, got {_show(value)}" if key != "" and not isinstance(key, int) else \
            f"must be {words}, got {_show(value)}"
    if kind == "greater_than":
        return f"{'sizes' if isinstance(key, int) else key} must be > {ctx.get('gt')}, got {_show(value)}"
    if kind == "literal_error":
        return f"{key} must be {ctx.get('expected')}, got {_show(value)}"
    return f"{item['msg']} (got {_show(value)})"


def _entry_shape_message(value: Any) -> str:
    if isinstance(value, str):
        return f"write '{value}: {{}}': a layer is a one-key mapping {{LayerName: {{arguments}}}}"
    if isinstance(value, dict) and not value:
        return "empty layer entry: write {LayerName: {arguments}}"
    if isinstance(value, dict) and len(value) > 1:
        keys = list(value)
        return (f"a layer entry has one key (the layer name), got {', '.join(repr(str(k)) for k in keys)}; "
                f"indent the arguments under '{keys[0]}'")
    if isinstance(value, dict):
        return f"a layer name must be a string, got {_show(next(iter(value)))}"
    return f"a layer must be a one-key mapping {{LayerName: {{arguments}}}}, got {_show(value)}"
