"""Pydantic v2 schemas of a model spec, generated from the parameter table and signatures.

A spec is a mapping with ``layers``: a list of one-key mappings ``{LayerName: {args}}``.
For the 32 SNN layers the arguments come from :func:`tracetorch.snn.grammar.param_specs`
(each parameter a number, a list of ``num_neurons`` numbers, or ``{value, rank, learn}``),
plus ``num_neurons``, ``dim`` and, on firing layers, ``spike_fn`` / ``quant_fn``. For
torch and registered layers the arguments come from the constructor signature.

Example:
    >>> spec = ModelSpec.model_validate({"input_shape": [4], "layers": [{"LIB": {"beta": 0.8}}]})
    >>> spec.entries()
    [('LIB', {'beta': {'value': 0.8}})]
    >>> spec.to_dict()["layers"]
    [{'LIB': {'beta': 0.8}}]
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    WithJsonSchema,
    create_model,
    model_validator,
)

from tracetorch.builder import registry
from tracetorch.builder.registry import UnknownNameError
from tracetorch.core.constraints import CONSTRAINTS
from tracetorch.snn.grammar import ParamSpec, layer_names, param_specs, parse

__all__ = ["ModelSpec", "LayerArgs", "args_model", "INFERABLE", "REGISTERED_TAG"]

INFERABLE = ("num_neurons", "dim", "in_features", "in_channels", "num_features", "normalized_shape")
"""Arguments shape inference fills in when they are omitted."""

REGISTERED_TAG = "__registered__"
SKIPPED_ARGUMENTS = frozenset({"device", "dtype", "return_indices", "self"})
"""Constructor arguments a spec never sets (placement is the trainer's; return_indices breaks a Sequential)."""
_PARAM_KEYS = ("value", "rank", "learn")
PositiveInt = Annotated[StrictInt, Field(gt=0)]
Number = StrictInt | StrictFloat


class LayerArgs(BaseModel):
    """Base of every layer's argument schema: unknown keys are errors; ``null`` means ``{}``."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _none_is_empty(cls, data: Any) -> Any:
        return {} if data is None else data


# ---- SNN parameters -------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _show(x: Any) -> str:
    return "null" if x is None else repr(x)


def _check_param(spec: ParamSpec):  # type: ignore[no-untyped-def]
    constraint = CONSTRAINTS[spec.constraint]

    def check(given: Any) -> dict[str, Any] | None:
        if given is None:  # null: the default
            return None
        form = given if isinstance(given, dict) else {"value": given}
        extra = [k for k in form if k not in _PARAM_KEYS]
        if extra:
            raise ValueError(f"unknown key {extra[0]!r} in {spec.name}; a parameter takes value, rank and learn")
        if "value" not in form:
            raise ValueError(f"{spec.name} needs a value: {{value: {spec.default:g}, rank: 0, learn: false}}")
        value = form["value"]
        if _is_number(value):
            values = [value]
        elif isinstance(value, list) and value and all(_is_number(v) for v in value):
            values = value
        else:
            raise ValueError(f"{spec.name} must be a number, a list of numbers or {{value, rank, learn}}, got {_show(value)}")
        rank = form.get("rank")
        if "rank" in form and (isinstance(rank, bool) or rank not in (0, 1)):
            raise ValueError(f"rank must be 0 (one shared value) or 1 (one value per neuron), got {_show(rank)}")
        if isinstance(value, list) and rank == 0:
            raise ValueError(f"{spec.name} is a list (one value per neuron) but rank is 0; rank 0 takes a single number")
        if "learn" in form and not isinstance(form["learn"], bool):
            raise ValueError(f"learn must be true or false, got {_show(form['learn'])}")
        for v in values:
            if not math.isfinite(v) or (constraint.low is not None and v <= constraint.low) or (
                constraint.high is not None and v >= constraint.high
            ):
                raise ValueError(f"{spec.name} must be {constraint.describe()}, got {v:g}")
        return {k: form[k] for k in _PARAM_KEYS if k in form}

    return check


def _number_schema(constraint: str) -> dict[str, Any]:
    c = CONSTRAINTS[constraint]
    schema: dict[str, Any] = {"type": "number"}
    if c.low is not None:
        schema["exclusiveMinimum"] = c.low
    if c.high is not None:
        schema["exclusiveMaximum"] = c.high
    return schema


def _param_json_schema(spec: ParamSpec) -> dict[str, Any]:
    number = _number_schema(spec.constraint)
    value = {"anyOf": [number, {"type": "array", "items": number, "minItems": 1}]}
    form = {
        "type": "object",
        "properties": {"value": value, "rank": {"enum": [0, 1]}, "learn": {"type": "boolean"}},
        "required": ["value"],
        "additionalProperties": False,
    }
    return {"anyOf": [*value["anyOf"], form], "description": f"{spec.doc} (default {spec.default:g}; {spec.constraint})"}


def _param_field(spec: ParamSpec) -> tuple[Any, Any]:
    kind = Annotated[Any, AfterValidator(_check_param(spec)), WithJsonSchema(_param_json_schema(spec))]
    return kind, Field(default=None)


# ---- spike_fn / quant_fn ----------------------------------------------------------------


def _check_fn(kind: registry.FnKind):  # type: ignore[no-untyped-def]
    def check(given: Any) -> dict[str, Any] | None:
        if given is None:  # null: the default
            return None
        if isinstance(given, str):
            name, args = given, {}
        elif isinstance(given, dict) and isinstance(given.get("name"), str):
            name, args = given["name"], {k: v for k, v in given.items() if k != "name"}
        else:
            raise ValueError(f"{kind} must be a name or {{name: ..., <arguments>}}, got {_show(given)}")
        try:
            factory = registry.lookup_function(kind, name)
        except UnknownNameError as err:
            raise ValueError(str(err)) from None
        try:
            inspect.signature(factory).bind(**args)
            factory(**args)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: {err}") from None
        return {"name": name, **args}

    return check


def _fn_field(kind: registry.FnKind) -> tuple[Any, Any]:
    names = {"enum": registry.function_names(kind)}
    schema = {"anyOf": [names, {"type": "object", "properties": {"name": names}, "required": ["name"]}]}
    return Annotated[Any, AfterValidator(_check_fn(kind)), WithJsonSchema(schema)], Field(default=None)


# ---- argument models --------------------------------------------------------------------


@cache
def _snn_args(name: str) -> type[LayerArgs]:
    flags = parse(name)
    fields: dict[str, Any] = {
        "num_neurons": (PositiveInt | None, Field(default=None, description="size of the neuron dimension (inferred)")),
        "dim": (StrictInt | None, Field(default=None, description="neuron dimension of [B, ...] (inferred: -1, or -3 "
                                                                   "for [B, C, H, W])")),
    }
    for spec in param_specs(flags):
        fields[spec.name] = _param_field(spec)
    if flags.fires:
        fields["spike_fn"] = _fn_field("spike_fn")
        fields["quant_fn"] = _fn_field("quant_fn")
    return create_model(f"{name}Args", __base__=LayerArgs, __doc__=f"Arguments of {name}.", **fields)


def _spec_type(tp: Any) -> Any:
    """A constructor annotation as a strict spec type (tuples become lists: YAML has no tuples)."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return StrictBool
    if tp is int:
        return StrictInt
    if tp is float:
        return Number
    if tp is str:
        return StrictStr
    if tp is type(None):
        return None
    if origin in (Union, types.UnionType):
        return Union[tuple(_spec_type(a) for a in typing.get_args(tp))]  # noqa: UP007
    if origin is Literal:
        return tp
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = _spec_type(args[0]) if args else Any
        if origin is tuple and args and Ellipsis not in typing.get_args(tp):
            return Annotated[list[item], Field(min_length=len(args), max_length=len(args))]
        return list[item]
    if isinstance(tp, type) and issubclass(tp, (tuple, list)):
        return list[StrictInt]
    return Any


@cache
def _signature_args(factory: Any, name: str) -> type[LayerArgs]:
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    for param in inspect.signature(factory).parameters.values():
        if param.name in SKIPPED_ARGUMENTS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        tp = _spec_type(hints.get(param.name, Any)) if param.name in hints else Any
        if param.default is inspect.Parameter.empty:
            default = None if param.name in INFERABLE else ...
            tp = tp | None if default is None and tp is not Any else tp
        else:
            default = param.default
            if default is None and tp is not Any:
                tp = tp | None
        fields[param.name] = (tp, Field(default=default))
    return create_model(f"{name}Args", __base__=LayerArgs, __doc__=f"Arguments of {name} (from its signature).", **fields)


def args_model(name: str) -> type[LayerArgs]:
    """The argument schema of a registered layer name."""
    entry = registry.lookup(name)
    return _snn_args(name) if entry.kind == "snn" else _signature_args(entry.factory, name)


@cache
def _entry_model(name: str) -> type[BaseModel]:
    """``{name: args}`` as a model (aliased when the name cannot be a field name)."""
    plain = name.isidentifier() and not name.startswith("_") and not hasattr(BaseModel, name)
    field = (args_model(name), ...) if plain else (args_model(name), Field(alias=name))
    model = create_model(f"{name}Layer", __config__=ConfigDict(extra="forbid"), **{name if plain else "args": field})
    model._tt_name = name  # type: ignore[attr-defined]
    return model


def _layer_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return getattr(type(value), "_tt_name", None)
    if not isinstance(value, dict) or len(value) != 1:
        return None
    key = next(iter(value))
    if not isinstance(key, str):
        return None
    if registry.is_builtin(key):
        return key
    try:
        registry.lookup(key)
    except UnknownNameError:
        return key
    return REGISTERED_TAG


_BUILTIN_NAMES = [*layer_names(), *(cls.__name__ for cls in registry.TORCH_LAYERS)]
_REGISTERED_SCHEMA = {
    "type": "object", "minProperties": 1, "maxProperties": 1, "x-tracetorch-registered": True,
    "propertyNames": {"not": {"enum": _BUILTIN_NAMES}},
}
RegisteredLayer = Annotated[dict[str, Any], WithJsonSchema(_REGISTERED_SCHEMA)]
LayerSpec = Annotated[
    Union[  # noqa: UP007
        tuple(Annotated[_entry_model(n), Tag(n)] for n in _BUILTIN_NAMES) + (Annotated[RegisteredLayer, Tag(REGISTERED_TAG)],)
    ],
    Discriminator(_layer_tag),
]


class ModelSpec(BaseModel):
    """A model file: optional ``name`` and per-sample ``input_shape``, and the ``layers``."""

    model_config = ConfigDict(extra="forbid", title="traceTorch model spec")

    name: StrictStr | None = Field(default=None, description="a label for the model")
    input_shape: list[PositiveInt] | None = Field(
        default=None, min_length=1, description="per-sample input shape (no batch, no time), e.g. [1, 28, 28]"
    )
    layers: list[LayerSpec] = Field(min_length=1, description="the layers in order, each {LayerName: {arguments}}")

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        """``(layer name, given arguments)`` per layer, in order."""
        out = []
        for layer in self.layers:
            if isinstance(layer, BaseModel):
                name = type(layer)._tt_name  # type: ignore[attr-defined]
                args = next(iter(layer.__dict__.values())).model_dump(exclude_unset=True)
                out.append((name, {k: v for k, v in args.items() if v is not None or k not in _NULL_IS_DEFAULT[name]}))
            else:
                (name, args), = layer.items()
                out.append((name, dict(args or {})))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A plain document (shorthand where possible) that validates back to this spec."""
        doc: dict[str, Any] = {}
        if self.name is not None:
            doc["name"] = self.name
        if self.input_shape is not None:
            doc["input_shape"] = list(self.input_shape)
        doc["layers"] = [{name: {k: _shorthand(v) for k, v in args.items()}} for name, args in self.entries()]
        return doc


class _NullIsDefault(dict):
    """Per layer name: the arguments for which ``null`` means "use the default" (SNN ones, inferable sizes)."""

    def __missing__(self, name: str) -> set[str]:
        entry = registry.lookup(name)
        self[name] = set(args_model(name).model_fields) if entry.kind == "snn" else set(INFERABLE)
        return self[name]


_NULL_IS_DEFAULT = _NullIsDefault()


def _shorthand(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"value"}:
        return value["value"]
    if isinstance(value, dict) and set(value) == {"name"}:
        return value["name"]
    return value


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec, registered user layers included (for editors)."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **ModelSpec.model_json_schema()}
    defs = schema.setdefault("$defs", {})
    user = [n for n in registry.registered_names() if not registry.is_builtin(n)]
    extra = []
    for name in user:
        sub = _entry_model(name).model_json_schema(by_alias=True)
        defs.update(sub.pop("$defs", {}))
        defs[f"{name}Layer"] = sub
        extra.append({"$ref": f"#/$defs/{name}Layer"})
    _replace_registered(schema, extra)
    _add_graph(schema, [*_BUILTIN_NAMES, *user])
    return schema


def _add_graph(schema: dict[str, Any], names: list[str]) -> None:
    """Graph specs (``nodes``, ``output``, ``blocks``, ``include``) next to chains (``layers``): one or the other."""
    reference = {"type": "object", "properties": {"node": {"type": "string"}, "delay": {"enum": [0, 1]}},
                 "required": ["node"], "additionalProperties": False}
    edge = {"anyOf": [{"type": "string"}, reference]}
    kinds: dict[str, Any] = {name: {"$ref": f"#/$defs/{name}Layer/properties/{name}"} for name in names}
    empty = {"type": ["object", "null"], "maxProperties": 0}
    options = {"concat": {"dim": {"type": "integer"}}, "sew": {"fn": {"enum": ["ADD", "AND", "IAND"]}}}
    kinds.update({"add": empty, "mul": empty})
    kinds.update({op: {"type": ["object", "null"], "properties": props, "additionalProperties": False}
                  for op, props in options.items()})
    node = {"type": "object", "properties": {"from": {"anyOf": [edge, {"type": "array", "items": edge}]}, **kinds},
            "additionalProperties": {"type": ["object", "null"], "description": "a block instance: {parameter: value}"},
            "minProperties": 1, "maxProperties": 2}
    nodes = {"type": "object", "additionalProperties": node, "minProperties": 1,
             "description": "named nodes: {name: {Layer | add | mul | concat | sew | Block: {...}, from: inputs}}"}
    block = {"type": "object", "required": ["nodes"], "additionalProperties": False,
             "properties": {"params": {"type": ["object", "null"]}, "nodes": nodes, "output": {"type": "string"}}}
    files = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    schema["properties"].update({"nodes": nodes, "output": {"type": "string", "description": "the node the model returns"},
                                 "blocks": {"type": "object", "additionalProperties": block}, "include": files})
    schema.pop("required", None)
    schema["oneOf"] = [{"required": ["layers"], "not": {"required": ["nodes"]}}, {"required": ["nodes", "output"],
                                                                                   "not": {"required": ["layers"]}}]


def _replace_registered(node: Any, extra: list[dict[str, Any]]) -> None:
    if isinstance(node, dict):
        for key in ("oneOf", "anyOf"):
            options = node.get(key)
            if isinstance(options, list) and any(isinstance(o, dict) and o.get("x-tracetorch-registered") for o in options):
                node[key] = [o for o in options if not (isinstance(o, dict) and o.get("x-tracetorch-registered"))] + extra
        for value in node.values():
            _replace_registered(value, extra)
    elif isinstance(node, list):
        for value in node:
            _replace_registered(value, extra)
