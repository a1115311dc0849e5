"""Spec -> ``tt.Sequential`` (``build_model``), file -> spec (``load_spec``), model -> spec.

Each stage collects every problem before raising one :class:`SpecError`: the schema
checks every layer; then the layers up to the first broken one are built with shape
inference, so a size mismatch is reported together with the typos after it.

Example:
    >>> import torch, tracetorch as tt
    >>> net = tt.build_model({"input_shape": [1, 4, 4], "layers": [
    ...     {"Flatten": {}}, {"Linear": {"out_features": 8}}, {"LIB": {"beta": 0.8}}]})
    >>> net.run(torch.rand(5, 2, 1, 4, 4)).shape
    torch.Size([5, 2, 8])
    >>> tt.builder.model_to_spec(net).to_dict()["layers"][1]
    {'Linear': {'in_features': 16, 'out_features': 8}}
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from tracetorch.builder import registry, schema, shapes
from tracetorch.builder.errors import Loc, SpecError, SpecIssue, format_loc, issues_at
from tracetorch.builder.schema import ModelSpec
from tracetorch.builder.translate import translate
from tracetorch.builder.yaml_lines import load_yaml
from tracetorch.core.graph import Graph
from tracetorch.core.model import Sequential
from tracetorch.snn.grammar import param_specs
from tracetorch.snn.layer import NeuronLayer

if TYPE_CHECKING:
    from tracetorch.builder.graph import GraphSpec

__all__ = ["build_model", "load_spec", "model_to_spec", "read_document"]

Source: TypeAlias = "ModelSpec | GraphSpec | Mapping[str, Any] | str | Path"
Problems = list[tuple[Loc, str]]
MAX_SPEC_BYTES = 16 << 20  # a model file is a page of YAML; 16 MiB leaves room for generated ones


def read_document(source: str | Path) -> tuple[Any, dict[Loc, int]]:
    """Read a YAML file into ``(data, lines)``; unreadable files and YAML errors raise ``SpecError``."""
    path = Path(source)

    def refuse(reason: str) -> SpecError:
        return SpecError([SpecIssue(str(path), None, reason)], str(path))

    try:
        if path.exists() and not path.is_file():
            raise refuse("not a regular file (a directory, FIFO or device); give a YAML file")
        if path.is_file() and path.stat().st_size > MAX_SPEC_BYTES:
            raise refuse(f"{path.stat().st_size:,} bytes is more than a model file may hold ({MAX_SPEC_BYTES:,})")
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            raise refuse(f"more than {MAX_SPEC_BYTES:,} bytes; a model file may hold at most that")
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise refuse(f"not UTF-8 text (byte {err.start}: {err.reason}); save the file as UTF-8") from None
    except OSError as err:
        raise refuse(f"cannot read the file: {err.strerror or err}") from None
    data, lines, problems = load_yaml(text)
    if problems:
        issues = [SpecIssue(format_loc(loc), line or None, message) for loc, line, message in problems]
        raise SpecError(issues, str(path))
    return data, lines


def _document(source: Source) -> tuple[Any, dict[Loc, int], str | None]:
    if isinstance(source, (str, Path)):
        data, lines = read_document(source)
        return data, lines, str(source)
    if isinstance(source, Mapping) and not isinstance(source, dict):
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(source, DictConfig):
                return OmegaConf.to_container(source, resolve=True), {}, None
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        return dict(source), {}, None
    return source, {}, None


def _validate(data: Any) -> tuple[ModelSpec | None, Problems]:
    try:
        return ModelSpec.model_validate(data), []
    except ValidationError as err:
        return None, translate(err)


def declared_input_shape(source: Source) -> list[int] | None:
    """The ``input_shape`` a spec (file, dict, chain or graph) declares itself, or None; read, not validated."""
    if isinstance(source, ModelSpec):
        return None if source.input_shape is None else list(source.input_shape)
    data, _, _ = _document(source)
    shape = data.get("input_shape") if isinstance(data, dict) else None
    return list(shape) if isinstance(shape, (list, tuple)) else None


def load_spec(source: Source) -> ModelSpec | GraphSpec:
    """Read and validate a spec (file path, dict or ``ModelSpec``) without allocating modules.

    A chain gives a :class:`ModelSpec`; a graph (``nodes``) a :class:`~tracetorch.builder.graph.GraphSpec`,
    checked by building it on the meta device when it has an ``input_shape`` (a graph without one, such as
    the shipped model configs whose shape comes from the data, is checked when it is built with a shape).
    """
    from tracetorch.builder.graph import GraphSpec, build_graph, is_graph_document

    if isinstance(source, (ModelSpec, GraphSpec)):
        return source
    data, lines, label = _document(source)
    if is_graph_document(data):  # a graph is checked by building it on the meta device (no memory)
        if data.get("input_shape") is not None:
            build_graph(data, lines, label, _base_dir(source), "meta")
        return GraphSpec(data)
    spec, problems = _validate(data)
    problems += _registered_problems(data)
    if problems:
        raise SpecError(issues_at(lines, problems), label)
    assert spec is not None
    return spec


def build_model(
    source: Source, *, input_shape: list[int] | tuple[int, ...] | None = None, device: Device = None
) -> Sequential | Graph:
    """Build the model a spec describes: a :class:`tracetorch.Sequential` for a ``layers`` chain, a
    :class:`tracetorch.Graph` for a ``nodes`` graph (``forward`` = one step).

    Sizes the spec omits are inferred from ``input_shape`` (the spec's, or the
    keyword's, which wins: a trainer passes its dataset's sample shape); every
    problem in the spec is reported at once as a :class:`SpecError`. Shapes are
    inferred on PyTorch's meta device, so ``device="meta"`` checks a spec of any size
    without allocating its parameters (exact shapes and counts, no values).
    """
    from tracetorch.builder.graph import GraphSpec, build_graph, is_graph_document

    if isinstance(source, (ModelSpec, GraphSpec)):
        source = source.to_dict()
    data, lines, label = _document(source)
    if input_shape is not None and isinstance(data, dict):
        data = {**data, "input_shape": list(input_shape)}
    if is_graph_document(data):
        return build_graph(data, lines, label, _base_dir(source), device)
    spec, problems = _validate(data)
    problems += _registered_problems(data)
    if spec is None or problems:
        problems += _prefix_problems(data, problems)
    if spec is not None and not problems:
        resolved, problems = _resolve_chain(spec.entries(), spec.input_shape)
        if not problems:
            modules, problems = materialize(resolved, device)
    if problems:
        raise SpecError(issues_at(lines, sorted(problems, key=_order)), label)
    assert spec is not None
    model = Sequential(*modules)
    model.input_shape = None if spec.input_shape is None else tuple(spec.input_shape)
    model.spec_name = spec.name
    model.spec_warnings = issues_at(lines, [w for layer in resolved for w in layer.warnings])
    for issue in model.spec_warnings:
        warnings.warn(f"{label or 'spec'}: {issue}", SpecWarning, stacklevel=2)
    return model


def _base_dir(source: Source) -> Path | None:
    return Path(source).parent if isinstance(source, (str, Path)) else None


class SpecWarning(UserWarning):
    """A spec that builds but probably does not mean what it says (``model.spec_warnings`` lists them)."""


def _order(problem: tuple[Loc, str]) -> tuple[int, int]:
    """Document order: top-level keys first, then layers by index."""
    loc = problem[0]
    return (1, loc[1]) if len(loc) > 1 and loc[0] == "layers" and isinstance(loc[1], int) else (0, 0)


def _prefix_problems(data: Any, problems: Problems) -> Problems:
    """Build-stage problems of the layers before the first broken one (shape checks)."""
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        return []
    if any(loc[:1] != ("layers",) or len(loc) < 2 for loc, _ in problems):
        return []
    first_bad = min(int(loc[1]) for loc, _ in problems)
    if first_bad == 0:
        return []
    prefix = {**data, "layers": data["layers"][:first_bad]}
    spec, more = _validate(prefix)
    if spec is None or more or _registered_problems(prefix):
        return []
    return _resolve_chain(spec.entries(), spec.input_shape)[1]


def _registered_problems(data: Any) -> Problems:
    """User layers are checked against their signatures here (the static schema accepts any arguments)."""
    layers = data.get("layers") if isinstance(data, dict) else None
    problems: Problems = []
    for index, layer in enumerate(layers if isinstance(layers, list) else []):
        if not (isinstance(layer, dict) and len(layer) == 1 and isinstance(next(iter(layer)), str)):
            continue
        (name, args), = layer.items()
        try:
            if registry.lookup(name).kind != "user":
                continue
        except registry.UnknownNameError:
            continue
        try:
            schema.args_model(name).model_validate(args)
        except ValidationError as err:
            problems += translate(err, ("layers", index, name))
    return problems


def _resolve_chain(entries: list[tuple[str, dict[str, Any]]], input_shape: list[int] | None) -> tuple[list[Resolved], Problems]:
    shape: shapes.Shape | None = None if input_shape is None else tuple(input_shape)
    resolved: list[Resolved] = []
    for index, (name, args) in enumerate(entries):
        layer, problems = resolve_layer(name, args, shape, ("layers", index, name))
        if problems:
            return resolved, problems
        assert layer is not None
        resolved.append(layer)
        shape = layer.output_shape
    return resolved, []


Device = str | torch.device | None


@dataclass
class Resolved:
    """A layer with every argument known: ``module`` lives on the meta device (shapes and counts only)."""

    name: str
    args: dict[str, Any]
    loc: Loc
    module: nn.Module
    input_shape: shapes.Shape | None
    output_shape: shapes.Shape | None
    warnings: list[tuple[Loc, str]]


def resolve_layer(name: str, args: dict[str, Any], shape: shapes.Shape | None, loc: Loc) -> tuple[Resolved | None, Problems]:
    """Infer the omitted sizes of one layer from its input ``shape`` and find its output shape, allocating nothing."""
    entry = registry.lookup(name)
    accepted = list(inspect.signature(entry.factory).parameters)
    plain = {k: v for k, v in args.items() if k in schema.INFERABLE and v is not None}
    sizes, found = shapes.infer_arguments(name, accepted, plain, shape)
    if found:
        return None, [((*loc, arg), reason) for arg, reason in found]
    merged = {**args, **sizes}
    with torch.device("meta"):
        module, problems = _make(entry, name, merged, loc)
    if module is None:
        return None, problems
    out = shape
    if shape is not None:
        try:
            out = shapes.output_shape(module, shape, name, "meta")
        except shapes.ShapeProblem as err:
            fallback, _ = _make(entry, name, merged, loc) if _small(module) else (None, [])
            if fallback is None:  # a module that cannot run on the meta device is run for real when it is small
                return None, [(loc, str(err))]
            try:
                out = shapes.output_shape(fallback, shape, name, "cpu")
            except shapes.ShapeProblem as real:
                return None, [(loc, str(real))]
    return Resolved(name, merged, loc, module, shape, out, _dim_warnings(entry, name, args, shape, loc)), []


def _small(module: nn.Module) -> bool:
    return sum(t.numel() for t in (*module.parameters(), *module.buffers())) <= 10_000_000


def _dim_warnings(entry: registry.LayerEntry, name: str, args: dict[str, Any], shape: shapes.Shape | None,
                  loc: Loc) -> list[tuple[Loc, str]]:
    """An SNN ``dim`` that does not pick the channels of a ``[C, ...]`` input is legal but rarely meant."""
    dim = args.get("dim")
    if entry.kind != "snn" or dim is None or shape is None or len(shape) < 2 or dim in (1, -len(shape)):
        return []
    size = shape[dim] if dim < 0 else shape[dim - 1]
    return [((*loc, "dim"), f"{name} dim {dim} makes {size} neurons along an axis of {shapes.show(shape)} that is not "
                            f"the channels (dim {-len(shape)}); every position shares them. Remove dim to put the "
                            f"neurons on the channels")]


def materialize(resolved: list[Resolved], device: Device) -> tuple[list[nn.Module], Problems]:
    """The real modules of resolved layers (the meta ones themselves when ``device`` is meta)."""
    if device is not None and torch.device(device).type == "meta":
        return [layer.module for layer in resolved], []
    need = sum(t.numel() * t.element_size() for layer in resolved for t in (*layer.module.parameters(),
                                                                            *layer.module.buffers()))
    have = _memory()
    if (device is None or torch.device(device).type == "cpu") and have is not None and need > have:
        return [], [((), f"the model needs {format_bytes(need)} for its parameters but this machine has "
                         f"{format_bytes(have)} of memory (tt-validate checks such a spec without allocating it)")]
    modules: list[nn.Module] = []
    for layer in resolved:
        with torch.device(device) if device is not None else nullcontext():
            module, problems = _make(registry.lookup(layer.name), layer.name, layer.args, layer.loc)
        if module is None:
            return modules, problems
        modules.append(module)
    return modules, []


def _memory() -> int | None:
    """The machine's physical memory in bytes (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _make(entry: registry.LayerEntry, name: str, args: dict[str, Any], loc: Loc) -> tuple[nn.Module | None, Problems]:
    kwargs, found = _kwargs(entry, name, args, loc)
    if found:
        return None, found
    try:
        return entry.factory(**kwargs), []
    except Exception as err:  # the spec supplies every argument, so a failure is the spec's problem
        text = (str(err) or type(err).__name__).strip().splitlines()[0]  # never C++ frames
        if isinstance(err, (MemoryError, RuntimeError)) and "alloc" in text.lower():
            need = _bytes(name, kwargs, entry)
            text = f"cannot allocate the layer's parameters ({need}): {text}"
        return None, [(loc, text if text.startswith(name) else f"{name}: {text}")]


def _bytes(name: str, kwargs: dict[str, Any], entry: registry.LayerEntry) -> str:
    with torch.device("meta"):
        try:
            module = entry.factory(**kwargs)
        except Exception:
            return "size unknown"
    return format_bytes(sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())))


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def _kwargs(entry: registry.LayerEntry, name: str, args: dict[str, Any], loc: Loc) -> tuple[dict[str, Any], Problems]:
    """Spec arguments -> constructor keywords (SNN parameter forms expanded, functions made)."""
    if entry.kind != "snn":
        return dict(args), []
    kwargs: dict[str, Any] = {}
    problems: Problems = []
    names = {spec.name for spec in param_specs(entry.factory.FLAGS)}
    for key, value in args.items():
        if key in names:
            given = value["value"]
            if isinstance(given, list):
                if len(given) != args["num_neurons"]:
                    problems.append(((*loc, key), f"{key} lists {len(given)} values but {name} has "
                                                  f"num_neurons={args['num_neurons']} (one value per neuron)"))
                    continue
                given = torch.tensor(given, dtype=torch.get_default_dtype())
            kwargs[key] = given
            if "rank" in value:
                kwargs[f"{key}_rank"] = value["rank"]
            if "learn" in value:
                kwargs[f"learn_{key}"] = value["learn"]
        elif key in ("spike_fn", "quant_fn"):
            fn_args = {k: v for k, v in value.items() if k != "name"}
            kwargs[key] = registry.lookup_function(key, value["name"])(**fn_args)
        else:
            kwargs[key] = value
    return kwargs, problems


# ---- model -> spec --------------------------------------------------------------------


def model_to_spec(model: nn.Module) -> ModelSpec:
    """The spec of a :class:`tracetorch.Sequential` (or a flat spec of a :class:`tracetorch.Graph`) of registered layers.

    Building it gives the same architecture and the same neuron parameter settings
    (from each layer's ``config``); trained weights live in ``state_dict``, not specs.
    """
    if isinstance(model, Graph):
        from tracetorch.builder.graph import graph_to_spec

        return graph_to_spec(model)  # type: ignore[return-value]
    modules = list(model.children()) if isinstance(model, nn.Sequential | Sequential) else None
    if modules is None:
        raise TypeError(f"model_to_spec expects a tt.Sequential (as build_model returns), got {type(model).__name__}")
    doc: dict[str, Any] = {"layers": [layer_to_entry(m) for m in modules]}
    if getattr(model, "input_shape", None) is not None:
        doc["input_shape"] = list(model.input_shape)
    if getattr(model, "spec_name", None) is not None:
        doc["name"] = model.spec_name
    return ModelSpec.model_validate(doc)


def layer_to_entry(module: nn.Module) -> dict[str, dict[str, Any]]:
    """``{name: arguments}`` for one module."""
    if isinstance(module, NeuronLayer):
        return {type(module).FLAGS.name: _neuron_args(module)}
    name = next((n for n in registry.registered_names() if registry.lookup(n).factory is type(module)), None)
    if name is None:
        raise ValueError(f"cannot write {type(module).__name__} to a spec: register it with tt.builder.register "
                         f"(a registered class, not a factory function, so the module can be traced back to it)")
    config = getattr(module, "config", None)
    if isinstance(config, Mapping):
        return {name: _plain(dict(config))}
    return {name: _attribute_args(module, registry.lookup(name).factory)}


def _neuron_args(layer: NeuronLayer) -> dict[str, Any]:
    config = layer.config
    args: dict[str, Any] = {"num_neurons": layer.num_neurons}
    if layer.dim != -1:
        args["dim"] = layer.dim
    for spec in param_specs(layer.flags):
        form = {}
        if spec.name in config:
            form["value"] = _plain(config[spec.name])
        for field, key in (("rank", f"{spec.name}_rank"), ("learn", f"learn_{spec.name}")):
            if key in config:
                form[field] = config[key]
        if form:
            form.setdefault("value", spec.default)
            args[spec.name] = form
    for kind in ("spike_fn", "quant_fn"):
        if kind in config:
            args[kind] = registry.function_to_spec(kind, config[kind])  # type: ignore[arg-type]
    return args


def _attribute_args(module: nn.Module, factory: Any) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for param in inspect.signature(factory).parameters.values():
        if param.name in schema.SKIPPED_ARGUMENTS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name == "bias":
            value: Any = getattr(module, "bias", None) is not None
        elif hasattr(module, param.name):
            value = _plain(getattr(module, param.name))
        else:
            continue
        if param.default is inspect.Parameter.empty or not _same(value, param.default):
            args[param.name] = value
    return args


def _shortest(value: float, dtype: torch.dtype) -> float:
    """The shortest decimal that rounds to the same ``dtype`` value (``0.6`` rather than ``0.6000000238``)."""
    for digits in range(1, 18):
        short = float(f"{value:.{digits}g}")
        if torch.tensor(short, dtype=dtype).item() == value:
            return short
    return value


def _same(value: Any, default: Any) -> bool:
    """``value`` equals ``default``, counting ``[1, 1]`` as the default ``1`` (torch stores pairs)."""
    if isinstance(value, list) and not isinstance(default, (list, tuple)):
        return bool(value) and all(v == default for v in value)
    return value == _plain(default)


def _plain(value: Any) -> Any:
    """Tensors and tuples as YAML-friendly lists / numbers."""
    if isinstance(value, Tensor):
        values = value.detach().cpu().reshape(-1).tolist()
        if value.dtype in (torch.float32, torch.float16, torch.bfloat16):
            values = [_shortest(v, value.dtype) for v in values]
        return values[0] if value.ndim == 0 else values
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
