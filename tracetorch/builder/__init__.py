"""The declarative model builder: a YAML spec in, a :class:`tracetorch.Model` out.

A spec is a mapping with ``layers``, a list of one-key mappings ``{LayerName: {args}}``
(``{}`` when none), plus optional ``input_shape`` (per sample, used to infer sizes)
and ``name``; a spec with ``nodes`` instead of ``layers`` is a graph (branches, residual
connections, blocks, delayed edges; see :mod:`tracetorch.builder.blocks`). A number or a
list given for an SNN parameter is shorthand for ``{value: ...}``; ``{value, rank, learn}``
sets the rest.

Example:
    >>> import torch, tracetorch as tt
    >>> spec = {"input_shape": [1, 28, 28], "layers": [
    ...     {"Flatten": {}}, {"Linear": {"out_features": 128}},
    ...     {"LIB": {"beta": {"value": 0.9, "rank": 0, "learn": False}, "threshold": 1.0, "quant_fn": "round_ste"}},
    ...     {"Linear": {"out_features": 10}}, {"LI": {}}]}
    >>> net = tt.build_model(spec)
    >>> net(torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    >>> tt.build_model({"layers": [{"SDLIB": {"num_neurons": 4}}]})
    Traceback (most recent call last):
    ...
    tracetorch.builder.errors.SpecError: 1 problem:
      layers[0]: unknown layer 'SDLIB': prefixes go in the order D, S, R; did you mean 'DSLIB'?
"""

from tracetorch.builder.build import SpecWarning, build_model, layer_to_entry, load_spec, model_to_spec
from tracetorch.builder.errors import SpecError, SpecIssue
from tracetorch.builder.graph import GraphSpec
from tracetorch.builder.registry import register, register_function, registered_names, unregister
from tracetorch.builder.schema import ModelSpec, json_schema

__all__ = [
    "GraphSpec",
    "ModelSpec",
    "SpecError",
    "SpecIssue",
    "SpecWarning",
    "build_model",
    "json_schema",
    "layer_to_entry",
    "load_spec",
    "model_to_spec",
    "register",
    "register_function",
    "registered_names",
    "unregister",
]
