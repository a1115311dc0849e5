"""``to_nir``: a traceTorch model (``tt.Sequential`` chain or :class:`GraphModel`) as a ``nir.NIRGraph``.

Each module maps to the NIR node of the same name (``nn.Linear`` -> ``Affine``/``Linear``,
``Conv1d``/``Conv2d``, ``Flatten``, ``AvgPool2d`` (``divisor_override=1``: ``SumPool2d``));
``BatchNorm`` after a Linear/Conv is folded into its weights (eval statistics);
``Identity`` and ``Dropout`` vanish. Neuron layers map as :mod:`tracetorch.nir.neurons`
derives. Everything else (MaxPool, ReLU, D layers, ternary, graded or stochastic
outputs, ...) is refused, every offending layer in one :class:`NIRExportError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from tracetorch.core.model import Model
from tracetorch.nir.errors import NIRExportError, NIRResetWarning
from tracetorch.nir.graph import ElementwiseAffine, GraphModel
from tracetorch.nir.neurons import export_neuron, nearest, refusal, stateless_copy, tag_for
from tracetorch.snn.layer import NeuronLayer

__all__ = ["DEFAULT_DT", "to_nir", "check_exportable", "RESET_NOTE"]

DEFAULT_DT = 1e-4  # snnTorch's, SpikingJelly's and the NIR paper's time step
RESET_NOTE = ("NIR's LIF/CubaLIF nodes reset to v_reset after a spike; traceTorch subtracts the threshold "
              "(each node's metadata says reset='subtract'): a simulator that honours only v_reset gives "
              "different spikes after the first spike")
_SKIP = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_ALTERNATIVES = {"MaxPool1d": "AvgPool2d", "MaxPool2d": "AvgPool2d", "AdaptiveMaxPool2d": "AvgPool2d",
                 "ReLU": "a firing layer such as LIB with quant_fn=round_ste()"}


@dataclass
class _Export:
    dt: float
    approximate: bool
    problems: list[str] = field(default_factory=list)
    verdicts: list[tuple[str, str, str, str]] = field(default_factory=list)  # (path, type, verdict, reason)
    resets: int = 0


def _weights(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _refuse(ctx: _Export, path: str, module: nn.Module, reason: str, alternative: str | None,
            approximable: bool = False) -> None:
    label = type(module).__name__ if not isinstance(module, NeuronLayer) else module.flags.name
    near = f" Nearest exportable: {alternative}." if alternative else ""
    if approximable:
        near += " (to_nir(..., approximate=True) writes that instead, tagged so that from_nir rebuilds this layer exactly.)"
    ctx.problems.append(f"{path} ({label}): {reason}.{near}")
    ctx.verdicts.append((path, label, "refused", reason))


def _neuron(ctx: _Export, path: str, layer: NeuronLayer, shape: tuple[int, ...]) -> nir.NIRNode | None:
    why = refusal(layer, shape)
    if why is not None:
        reason, alternative = why
        hard = layer.flags.recurrent and len(shape) != 1
        try:
            tag_for(layer, exact=False)
        except ValueError:
            hard = True
        if not ctx.approximate or hard:
            _refuse(ctx, path, layer, reason, alternative, approximable=not hard)
            return None
        ctx.verdicts.append((path, layer.flags.name, "approximate", f"written as {nearest(layer.flags)}: {reason}"))
    else:
        ctx.verdicts.append((path, layer.flags.name, "exact", ""))
    ctx.resets += layer.flags.fires
    return export_neuron(layer, shape, ctx.dt, ctx.approximate)


def _with_gain(ctx: _Export, path: str, pre: ElementwiseAffine, layer: NeuronLayer, shape: tuple[int, ...]) -> nir.NIRNode | None:
    """A neuron preceded by the gain/leak that from_nir put in front of it: one NIR node again."""
    node = _neuron(ctx, path, layer, shape)
    if node is None or isinstance(node, nir.NIRGraph):
        if node is not None:
            _refuse(ctx, path, layer, "a recurrent layer with an input gain has no NIR form", None)
        return None
    gain = pre.gain.detach().double().cpu().numpy() * np.ones(shape)
    offset = pre.offset.detach().double().cpu().numpy() * np.ones(shape)
    node.metadata.pop("tracetorch", None)
    if isinstance(node, (nir.CubaLI, nir.CubaLIF)):
        if np.any(offset != 0):
            _refuse(ctx, path, layer, "a synaptic layer with a constant input offset (v_leak) has no NIR form", None)
            return None
        node.w_in = node.w_in * gain
        return node
    node.r = node.r * gain
    node.v_leak = offset if layer.flags.ema else offset / (ctx.dt / node.tau)  # v_leak drives (1-beta)*v_leak, 1-beta = dt/tau
    return node


def _linear(module: nn.Linear) -> nir.NIRNode:
    if module.bias is None:
        return nir.Linear(weight=_weights(module.weight))
    return nir.Affine(weight=_weights(module.weight), bias=_weights(module.bias))


def _conv(module: nn.Conv1d | nn.Conv2d, in_shape: tuple[int, ...]) -> nir.NIRNode:
    bias = _weights(module.bias) if module.bias is not None else np.zeros(module.out_channels, dtype=np.float32)
    common = {"weight": _weights(module.weight), "bias": bias, "groups": module.groups}
    if isinstance(module, nn.Conv1d):
        padding = module.padding if isinstance(module.padding, str) else module.padding[0]
        return nir.Conv1d(input_shape=in_shape[1], stride=module.stride[0], padding=padding,
                          dilation=module.dilation[0], **common)
    padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
    return nir.Conv2d(input_shape=tuple(in_shape[1:]), stride=tuple(module.stride), padding=padding,
                      dilation=tuple(module.dilation), **common)


def _pair(v: Any) -> np.ndarray:
    return np.array([v, v] if isinstance(v, int) else list(v))


def _fold_batchnorm(ctx: _Export, path: str, bn: nn.Module, previous: nir.NIRNode | None) -> nir.NIRNode | None:
    """The previous Linear/Conv node with the BatchNorm's eval-mode affine folded in, or None (refused)."""
    if not isinstance(previous, (nir.Linear, nir.Affine, nir.Conv1d, nir.Conv2d)) or bn.running_mean is None:
        _refuse(ctx, path, bn, "NIR has no BatchNorm; it can only be folded into a Linear or Conv right before it "
                "(with running statistics)", "BatchNorm right after a Linear/Conv")
        return None
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
    scale, shift = scale.detach().double().numpy(), shift.detach().double().numpy()
    weight = previous.weight
    dtype = weight.dtype
    bias = getattr(previous, "bias", np.zeros(weight.shape[0]))
    folded_w = (weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))).astype(dtype)
    folded_b = (bias * scale + shift).astype(dtype)
    ctx.verdicts.append((path, type(bn).__name__, "exact", "folded into the layer before it"))
    if isinstance(previous, (nir.Linear, nir.Affine)):
        return nir.Affine(weight=folded_w, bias=folded_b)
    previous.weight, previous.bias = folded_w, folded_b
    return previous


def _module_node(ctx: _Export, path: str, module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
                 ) -> nir.NIRNode | None:
    if isinstance(module, NeuronLayer):
        return _neuron(ctx, path, module, in_shape)
    if isinstance(module, Model) and not isinstance(module, GraphModel):
        parts = [m for m in module.children() if not isinstance(m, _SKIP)]
        if len(parts) == 2 and isinstance(parts[0], ElementwiseAffine) and isinstance(parts[1], NeuronLayer):
            return _with_gain(ctx, path, parts[0], parts[1], in_shape)
    if isinstance(module, GraphModel):
        return _graph_of(ctx, module, in_shape, path)
    node: nir.NIRNode | None = None
    if type(module) is nn.Linear:
        node = _linear(module)
    elif type(module) in (nn.Conv1d, nn.Conv2d):
        if module.padding_mode != "zeros":
            _refuse(ctx, path, module, f"padding_mode={module.padding_mode!r}; NIR convolutions pad with zeros", None)
            return None
        node = _conv(module, in_shape)
    elif type(module) is nn.Flatten:
        if module.start_dim == 0:
            _refuse(ctx, path, module, "flattening the batch dimension", "Flatten(start_dim=1)")
            return None
        shift = lambda d: d - 1 if d > 0 else d  # noqa: E731  NIR shapes have no batch dimension
        node = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=shift(module.start_dim),
                           end_dim=shift(module.end_dim))
    elif type(module) is nn.AvgPool2d:
        if module.ceil_mode or (not module.count_include_pad and np.any(_pair(module.padding) != 0)) \
                or module.divisor_override not in (None, 1):
            _refuse(ctx, path, module, "ceil_mode, count_include_pad=False with padding, or a divisor_override "
                    "other than 1 have no NIR form", "AvgPool2d(kernel_size, stride, padding)")
            return None
        stride = module.stride if module.stride is not None else module.kernel_size
        cls = nir.SumPool2d if module.divisor_override == 1 else nir.AvgPool2d
        node = cls(kernel_size=_pair(module.kernel_size), stride=_pair(stride), padding=_pair(module.padding))
    elif type(module) is ElementwiseAffine:
        if torch.any(module.offset != 0):
            _refuse(ctx, path, module, "an elementwise offset without a neuron after it has no NIR node", None)
            return None
        node = nir.Scale(scale=_weights(module.gain * torch.ones(in_shape)))
    else:
        name = type(module).__name__
        _refuse(ctx, path, module, f"NIR has no {name} node", _ALTERNATIVES.get(name))
        return None
    ctx.verdicts.append((path, type(module).__name__, "exact", ""))
    return node


def _flatten_chain(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    items = []
    for name, child in model.named_children():
        path = f"{prefix}{name}"
        if type(child) is nn.Sequential or (type(child).__name__ == "Sequential" and isinstance(child, Model)
                                            and not _is_gain_pair(child)):
            items += _flatten_chain(child, path + ".")
        else:
            items.append((path, child))
    return items


def _is_gain_pair(module: nn.Module) -> bool:
    parts = list(module.children())
    return len(parts) == 2 and isinstance(parts[0], ElementwiseAffine) and isinstance(parts[1], NeuronLayer)


def _trace(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per-sample input and output shapes of every submodule, from one step of a copy of the model."""
    twin = stateless_copy(model).eval()
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def hook(name: str):  # noqa: ANN202
        def record(_module: nn.Module, args: tuple, out: Any) -> None:
            if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                shapes.setdefault(name, (tuple(args[0].shape[1:]), tuple(out.shape[1:])))
        return record

    for name, module in twin.named_modules():
        module.register_forward_hook(hook(name))
    try:
        with torch.no_grad():
            twin(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError, TypeError) as err:
        raise NIRExportError(f"the model does not accept one step of input shape {list(input_shape)}: {err}") from None
    return shapes


def _exportable_container(model: nn.Module) -> nn.Module:
    """A chain (``tt.Sequential``/``nn.Sequential``) or a :class:`GraphModel`; a lone layer becomes a chain of one.

    Other models define their wiring in ``forward``, which export cannot read: refused rather than guessed.
    """
    if isinstance(model, (GraphModel, nn.Sequential)) or type(model).__name__ == "Sequential" and isinstance(model, Model):
        return model
    if isinstance(model, nn.Module) and not list(model.children()):
        from tracetorch.core.model import Sequential

        return Sequential(model)
    raise NIRExportError(f"to_nir exports tt.Sequential / nn.Sequential chains and the GraphModel of from_nir; "
                         f"{type(model).__name__} wires its modules in forward(), which cannot be read: rebuild it as a "
                         "tt.Sequential")


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        first = next((m for m in model.modules() if type(m) is nn.Linear), None)
        if first is not None and next(iter(model.children()), None) is first:
            input_shape = (first.in_features,)
    if input_shape is None:
        raise NIRExportError("to_nir needs input_shape (the per-sample shape, without batch), e.g. input_shape=(1, 28, 28)")
    return tuple(int(s) for s in input_shape)


def _graph_of(ctx: _Export, model: nn.Module, input_shape: tuple[int, ...], prefix: str = "") -> nir.NIRGraph | None:
    shapes = _trace(model, input_shape)
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    if isinstance(model, GraphModel):
        for name in model.order:
            key = model.keys[name]
            module = model.module(name)
            if name == model.input_name:
                nodes[name] = nir.Input(input_type=np.array(input_shape))
                continue
            in_shape, out_shape = shapes.get(f"nodes.{key}", ((), ()))
            if name == model.output_name and type(module) is nn.Identity:
                nodes[name] = nir.Output(output_type=np.array(out_shape))
                continue
            node = _module_node(ctx, f"{prefix}{name}", module, in_shape, out_shape)
            nodes[name] = node if node is not None else nir.Input(input_type=np.array(in_shape))
        edges = list(model.edges)
    else:
        previous_name, previous = "input", None
        nodes["input"] = nir.Input(input_type=np.array(input_shape))
        out_shape = input_shape
        for index, (path, module) in enumerate(_flatten_chain(model)):
            if isinstance(module, _SKIP):
                continue
            in_shape, out_shape = shapes.get(path, (out_shape, out_shape))
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                folded = _fold_batchnorm(ctx, f"{prefix}{path}", module, previous)
                if folded is not None and previous_name != "input":
                    nodes[previous_name] = previous = folded
                continue
            node = _module_node(ctx, f"{prefix}{path}", module, in_shape, out_shape)
            name = f"{index}_{(module.flags.name if isinstance(module, NeuronLayer) else type(module).__name__).lower()}"
            nodes[name] = node if node is not None else nir.Input(input_type=np.array(in_shape))
            edges.append((previous_name, name))
            previous_name, previous = name, node
        nodes["output"] = nir.Output(output_type=np.array(out_shape))
        edges.append((previous_name, "output"))
    if ctx.problems:
        return None
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)


def to_nir(model: nn.Module, dt: float = DEFAULT_DT, input_shape: Sequence[int] | None = None,
           approximate: bool = False) -> nir.NIRGraph:
    """The NIR graph of ``model`` (``dt`` is stored in the graph's metadata).

    ``input_shape`` is the per-sample input shape (default: ``model.input_shape`` as set
    by :func:`tracetorch.build_model`, or ``in_features`` of a leading Linear). Layers
    without an exact NIR form raise :class:`NIRExportError` naming each of them, the reason
    and the nearest exportable layer; ``approximate=True`` writes that nearest layer instead,
    tagged so that :func:`tracetorch.nir.from_nir` rebuilds the exact one. Firing layers
    warn (:class:`NIRResetWarning`) that NIR resets to ``v_reset`` where traceTorch subtracts.

    Example:
        >>> import torch, warnings, tracetorch as tt
        >>> from tracetorch.nir import to_nir
        >>> net = tt.Sequential(torch.nn.Linear(4, 3), tt.snn.LI(3))
        >>> graph = to_nir(net)
        >>> sorted(graph.nodes), graph.metadata["dt"]
        (['0_linear', '1_li', 'input', 'output'], 0.0001)
    """
    if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and dt > 0):
        raise NIRExportError(f"dt must be a positive number of seconds, got {dt!r}")
    ctx = _Export(float(dt), bool(approximate))
    model = _exportable_container(model)
    shape = _input_shape(model, input_shape)
    graph = _graph_of(ctx, model, shape)
    if graph is None:
        raise NIRExportError(f"cannot export to NIR ({len(ctx.problems)} layer{'s' * (len(ctx.problems) != 1)}):\n  "
                             + "\n  ".join(ctx.problems))
    graph.metadata = {"dt": float(dt), "source": "tracetorch", "input_shape": np.array(shape)}
    try:
        graph.infer_types()
        graph.check_types()
    except Exception as err:  # noqa: BLE001  nir's own checker: report, never a traceback
        raise NIRExportError(f"the exported graph fails NIR's type check: {err}") from None
    if ctx.resets:
        warnings.warn(RESET_NOTE, NIRResetWarning, stacklevel=2)
    return graph


def check_exportable(model: nn.Module, input_shape: Sequence[int] | None = None, dt: float = DEFAULT_DT
                     ) -> list[tuple[str, str, str, str]]:
    """``(path, layer, verdict, reason)`` per module; verdict is ``exact``, ``approximate`` or ``refused``."""
    ctx = _Export(float(dt), True)
    model = _exportable_container(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRResetWarning)
        _graph_of(ctx, model, _input_shape(model, input_shape))
    return ctx.verdicts
