"""``from_nir``: a NIR graph (or ``.nir`` file) as a :class:`tracetorch.Model` (a :class:`GraphModel`).

Nodes written by traceTorch carry a tag (:mod:`tracetorch.nir.neurons`); when the node's
numbers still match the tag's fingerprint, the exact layer (raw parameters bit for bit,
quantizer, rank, learnability) is rebuilt from it, also for layers written with
``approximate=True``. Other nodes map by the Euler mapping: ``beta = 1 - dt/tau``,
``LI``/``CubaLI`` -> ``LI``/``LIEMA``/``SLI``/``SLIEMA``, ``LIF``/``CubaLIF`` -> ``LIB``/``SLIB``
with binary spikes (``round_ste``), an input gain ``(1-beta)*r`` (times ``w_in``) and a
constant drive ``(1-beta)*v_leak`` in front (:class:`ElementwiseAffine`) when they are
not 1 and 0. Recurrent edges run through :class:`GraphModel`'s feedback.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from tracetorch.core.model import Sequential
from tracetorch.functional import round_ste
from tracetorch.nir.errors import NIRFileError, NIRImportError, NIRResetWarning
from tracetorch.nir.export import DEFAULT_DT
from tracetorch.nir.files import read
from tracetorch.nir.graph import ElementwiseAffine, GraphModel
from tracetorch.nir.neurons import NEURON_NODES, fingerprint, layer_from_tag
from tracetorch.snn import zoo

__all__ = ["from_nir", "load_nir_model"]

_TOL = 1e-6  # a gain within this of 1 (r = tau/dt written in float64) is 1


@dataclass
class _Import:
    dt: float
    resets: list[str] = field(default_factory=list)


def _f32(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.get_default_dtype())


def _size(node: nir.NIRNode, where: str) -> tuple[int, ...]:
    for key in ("tau", "tau_mem"):
        if hasattr(node, key):
            shape = tuple(np.shape(getattr(node, key)))
            if shape:
                return shape
    declared = node.input_type.get("input") if isinstance(node.input_type, dict) else None
    if declared is not None and np.size(declared) > 0:
        return tuple(int(s) for s in np.ravel(declared))
    raise NIRImportError(f"{where} ({type(node).__name__}): scalar parameters and no input shape: cannot size the layer")


def _per_neuron(values: Any, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    """``[N]`` values from a NIR array over ``shape``; neurons on the first axis, equal across the others."""
    array = np.broadcast_to(np.asarray(values, dtype=np.float64), shape)
    flat = array.reshape(shape[0], -1)
    if np.any(flat != flat[:, :1]):
        raise NIRImportError(f"{where}: {name} varies across the positions of shape {list(shape)}; traceTorch "
                             "neuron layers hold one value per channel (first axis)")
    return flat[:, 0].copy()


def _decay(tau: np.ndarray, dt: float, name: str, where: str) -> np.ndarray:
    decay = 1.0 - dt / tau
    if np.any(~((decay > 0) & (decay < 1))):
        bad = tau[~((decay > 0) & (decay < 1))].flat[0]
        raise NIRImportError(f"{where}: {name}={bad:g} with dt={dt:g} gives a decay 1 - dt/{name} outside (0, 1); "
                             "pass from_nir(..., dt=...) with the graph's time step")
    return decay


def _neuron(ctx: _Import, node: nir.NIRNode, where: str) -> nn.Module:
    shape = _size(node, where)
    dim = -len(shape)
    get = lambda name: _per_neuron(getattr(node, name), shape, name, where)  # noqa: E731
    cuba = isinstance(node, (nir.CubaLI, nir.CubaLIF))
    beta = _decay(get("tau_mem" if cuba else "tau"), ctx.dt, "tau_mem" if cuba else "tau", where)
    r, v_leak = get("r"), get("v_leak")
    kwargs: dict[str, Any] = {"dim": dim, "beta": _f32(beta)}
    ema = not isinstance(node, (nir.LIF, nir.CubaLIF)) and np.allclose(r, 1.0, rtol=0, atol=_TOL)
    gain = r if ema else (1.0 - beta) * r
    offset = (1.0 - beta) * v_leak if not ema else v_leak
    if cuba:
        kwargs["alpha"] = _f32(_decay(get("tau_syn"), ctx.dt, "tau_syn", where))
        gain = gain * get("w_in")
        if np.any(v_leak != 0):
            raise NIRImportError(f"{where} ({type(node).__name__}): v_leak != 0 on a current-based neuron has no "
                                 "traceTorch equivalent (the constant would pass through the synaptic trace)")
    if isinstance(node, (nir.LIF, nir.CubaLIF)):
        threshold = get("v_threshold")
        if np.any(threshold <= 0):
            raise NIRImportError(f"{where} ({type(node).__name__}): v_threshold must be > 0 (traceTorch thresholds are "
                                 f"positive), got {threshold.min():g}")
        bias = np.zeros_like(threshold)
        if str(node.metadata.get("reset", "")) == "subtract":  # written by traceTorch: threshold - bias, reset by threshold
            if "reset_amount" in node.metadata:
                bias = _per_neuron(node.metadata["reset_amount"], shape, "reset_amount", where) - threshold
                threshold = threshold + bias
        else:
            ctx.resets.append(where)
        kwargs.update(threshold=_f32(threshold), bias=_f32(bias), quant_fn=round_ste())
        cls = zoo.SLIB if cuba else zoo.LIB
    else:
        cls = {(False, False): zoo.LI, (False, True): zoo.LIEMA, (True, False): zoo.SLI, (True, True): zoo.SLIEMA}[(cuba, ema)]
    layer = cls(shape[0], **kwargs)
    if np.allclose(gain, 1.0, rtol=0, atol=_TOL) and not np.any(offset != 0):
        return layer
    spread = lambda v: _f32(v).reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape)  # noqa: E731
    return Sequential(ElementwiseAffine(spread(gain), spread(offset)), layer)


def _tagged(node: nir.NIRNode, where: str) -> nn.Module | None:
    tag = node.metadata.get("tracetorch") if isinstance(node.metadata, dict) else None
    if not isinstance(tag, dict):
        return None
    if str(tag.get("fingerprint", "")) != fingerprint(node):
        if not bool(tag.get("exact", True)):
            warnings.warn(f"{where}: an approximate traceTorch node was edited after export; importing what the NIR "
                          f"node says, not the exact {tag.get('layer')}", stacklevel=4)
        return None
    try:
        return layer_from_tag(tag)
    except (KeyError, TypeError, ValueError) as err:
        raise NIRImportError(f"{where}: malformed traceTorch tag ({err})") from None


def _pair(value: Any) -> tuple[int, ...] | str:
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    return tuple(int(v) for v in np.ravel(value))


def _module(ctx: _Import, node: nir.NIRNode, where: str) -> nn.Module:
    rebuilt = _tagged(node, where)
    if rebuilt is not None:
        return rebuilt
    kind = type(node).__name__
    if isinstance(node, (nir.Input, nir.Output)):
        return nn.Identity()
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = _f32(node.weight)
        if weight.ndim != 2:
            raise NIRImportError(f"{where} ({kind}): weight of shape {list(weight.shape)}; expected 2-D")
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=isinstance(node, nir.Affine))
        with torch.no_grad():
            module.weight.copy_(weight)
            if isinstance(node, nir.Affine):
                module.bias.copy_(_f32(node.bias))
        return module
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        weight = _f32(node.weight)
        cls = nn.Conv1d if isinstance(node, nir.Conv1d) else nn.Conv2d
        module = cls(weight.shape[1] * int(node.groups), weight.shape[0], tuple(weight.shape[2:]), stride=_pair(node.stride),
                     padding=_pair(node.padding), dilation=_pair(node.dilation), groups=int(node.groups))
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(_f32(node.bias))
        return module
    if isinstance(node, nir.Flatten):
        shift = lambda d: int(d) + 1 if int(d) >= 0 else int(d)  # noqa: E731  NIR dims exclude the batch
        return nn.Flatten(shift(node.start_dim), shift(node.end_dim))
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        return nn.AvgPool2d(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding),
                            divisor_override=1 if isinstance(node, nir.SumPool2d) else None)
    if isinstance(node, nir.Scale):
        scale = _f32(node.scale)
        return ElementwiseAffine(scale, torch.zeros_like(scale))
    if isinstance(node, NEURON_NODES):
        return _neuron(ctx, node, where)
    if isinstance(node, nir.NIRGraph):
        return _graph(ctx, node, where)
    reasons = {"IF": "a neuron without leak (decay 1); traceTorch decays lie in (0, 1)",
               "I": "an integrator without leak (decay 1); traceTorch decays lie in (0, 1)",
               "Delay": "delays are not supported", "Threshold": "a stateless threshold has no traceTorch layer"}
    raise NIRImportError(f"{where} ({kind}): cannot import: {reasons.get(kind, 'unsupported NIR node')}")


def _shape_of(node: nir.NIRNode) -> tuple[int, ...] | None:
    out = node.output_type.get("output") if isinstance(getattr(node, "output_type", None), dict) else None
    if out is None or np.size(out) == 0:
        return None
    return tuple(int(s) for s in np.ravel(out))


def _graph(ctx: _Import, graph: nir.NIRGraph, where: str) -> GraphModel:
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRImportError(f"{where}: a graph needs exactly one Input and one Output node, got inputs {inputs} "
                             f"and outputs {outputs}")
    modules = {name: _module(ctx, node, f"{where}.{name}") for name, node in graph.nodes.items()}
    shapes = {name: s for name, node in graph.nodes.items() if (s := _shape_of(node)) is not None}
    input_shape = _shape_of(graph.nodes[inputs[0]])
    try:
        return GraphModel(modules, [(str(a), str(b)) for a, b in graph.edges], inputs[0], outputs[0], shapes, input_shape)
    except ValueError as err:
        raise NIRImportError(f"{where}: {err}") from None


def from_nir(graph_or_path: nir.NIRGraph | str | os.PathLike, dt: float | None = None) -> GraphModel:
    """A traceTorch model running the NIR graph (``model.run(x_seq)``, states like any ``tt.Model``).

    ``dt`` defaults to the graph's ``metadata['dt']`` (written by :func:`to_nir`), else 1e-4.

    Example:
        >>> import torch, warnings, tracetorch as tt
        >>> from tracetorch.nir import to_nir, from_nir
        >>> net = tt.Sequential(torch.nn.Linear(4, 3), tt.snn.SLI(3, alpha=0.7))
        >>> copy = from_nir(to_nir(net))
        >>> x = torch.rand(10, 2, 4)
        >>> torch.equal(copy.run(x), net.run(x))
        True
    """
    if isinstance(graph_or_path, nir.NIRGraph):
        graph, where = graph_or_path, "graph"
    elif isinstance(graph_or_path, (str, os.PathLike)):
        graph, where = read(graph_or_path), str(graph_or_path)
    else:
        raise NIRImportError(f"from_nir expects a nir.NIRGraph or a path, got {type(graph_or_path).__name__}")
    if dt is None:
        meta = graph.metadata if isinstance(graph.metadata, dict) else {}
        dt = float(meta.get("dt", DEFAULT_DT))
    if not dt > 0:
        raise NIRImportError(f"dt must be a positive number of seconds, got {dt!r}")
    ctx = _Import(float(dt))
    model = _graph(ctx, graph, where)
    if ctx.resets:
        shown = ", ".join(ctx.resets[:3]) + (", ..." if len(ctx.resets) > 3 else "")
        warnings.warn(f"{len(ctx.resets)} LIF/CubaLIF node(s) ({shown}) reset to v_reset in NIR; traceTorch layers "
                      "subtract the threshold, so spikes differ after a "
                      "spike unless the source used subtractive reset", NIRResetWarning, stacklevel=2)
    return model


def load_nir_model(path: str | os.PathLike | None = None, input_shape: Any = None, num_classes: int | None = None,
                   dt: float | None = None, name: str | None = None) -> GraphModel:
    """``tt-train model=nir model.path=FILE.nir``: the model of a ``.nir`` file, checked against the dataset.

    Used as the ``factory`` of ``configs/model/nir.yaml`` (``input_shape`` and
    ``num_classes`` come from the dataset; ``name`` from the config).
    """
    if path is None or str(path) in ("", "???"):
        raise NIRFileError("model=nir needs the file: add model.path=FILE.nir")
    model = from_nir(path, dt=dt)
    if input_shape is not None and model.input_shape is not None:
        if [int(s) for s in input_shape] != [int(s) for s in model.input_shape]:
            # a flat graph input accepts any sample with the same number of values after a Flatten
            raise NIRImportError(f"{path}: the graph takes inputs of shape {list(model.input_shape)} but the dataset "
                                 f"gives {list(input_shape)}")
    return model
