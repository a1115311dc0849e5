"""traceTorch neuron layers <-> NIR neuron nodes: the mapping, derived from :mod:`tracetorch.snn.step`.

With forward Euler and a step ``dt``, NIR's ``tau dv/dt = (v_leak - v) + r*I`` becomes
``v <- beta*v + (1-beta)*(v_leak + r*I)`` with ``beta = 1 - dt/tau``. Matching each
layer's update (``layers.md``) term by term:

=============  ======================================================================
``LI``         ``mem = beta*mem + x``: ``LI(tau=dt/(1-beta), r=1/(1-beta), v_leak=0)``
``LIEMA``      ``mem = beta*mem + (1-beta)*x``: the same with ``r=1``
``SLI``        ``syn = alpha*syn + (1-alpha)*x; mem = beta*mem + syn`` (the new ``syn``):
               ``CubaLI(tau_syn=dt/(1-alpha), w_in=1, tau_mem, r as LI)``
``SLIEMA``     the same with ``r=1``
``LIB``        binary spikes (``quant_fn=round_ste()``, default ``spike_fn``) fire when
               ``mem > threshold - bias``: ``LIF(tau, r as LI, v_leak=0,
               v_threshold=threshold-bias, v_reset=0)``; traceTorch then *subtracts*
               ``threshold`` (metadata ``reset='subtract'``, ``reset_amount``)
``SLIB``       ``CubaLIF`` (as ``SLI`` + ``LIF``)
``R`` prefix   a subgraph: Input -> [synapse LI] -> LIF -> trace ``LI(tau=dt/(1-gamma),
               r=1)`` -> ``Linear(diag(rec_weight))`` -> back into the LIF; with
               ``gamma == 0`` the 4-node form Input, LIF, Linear, Output. ``SR`` layers
               put their synaptic trace in front of the LIF as an ``LI`` (the
               recurrence reaches the membrane, not the synapse).
=============  ======================================================================

Dual (``D``) layers, ternary families and graded or stochastic outputs have no NIR
primitive: :func:`refusal` says why and names the nearest exportable layer.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from tracetorch.functional import ProbabilisticSTE, RoundSTE, Sigmoid4x, StochasticRoundSTE, sigmoid4x
from tracetorch.snn.grammar import Flags
from tracetorch.snn.layer import NeuronLayer
from tracetorch.snn.zoo import LAYERS

__all__ = ["refusal", "export_neuron", "stateless_copy", "tag_for", "layer_from_tag", "fingerprint", "quant_name"]

NEURON_NODES = (nir.LI, nir.CubaLI, nir.LIF, nir.CubaLIF)


def quant_name(fn: Any) -> tuple[str | None, float]:
    """``(kind, step_size)`` of a built-in quantizer; kind ``None`` for anything else."""
    if type(fn) is nn.Identity:
        return "identity", 1.0
    for cls, kind in ((RoundSTE, "round_ste"), (StochasticRoundSTE, "stochastic_round_ste")):
        if type(fn) is cls:
            return kind, float(fn.step_size)
    if type(fn) is ProbabilisticSTE:
        return "probabilistic_ste", 1.0
    return None, 1.0


def _spike_name(fn: Any) -> str | None:
    return "sigmoid4x" if fn is sigmoid4x or type(fn) is Sigmoid4x else None


def nearest(flags: Flags) -> str:
    """The exportable layer closest to ``flags``: no ``D``, binary instead of ternary."""
    return Flags(False, flags.synaptic, flags.recurrent, "LIB" if flags.ternary else flags.family).name


def refusal(layer: NeuronLayer, shape: tuple[int, ...]) -> tuple[str, str] | None:
    """``(reason, nearest exportable alternative)`` when ``layer`` has no exact NIR form, else ``None``."""
    flags = layer.flags
    near = nearest(flags)
    if flags.dual:
        return ("dual (D) layers keep a positive and a negative membrane with their own decays; "
                "NIR has no such neuron", near)
    if flags.ternary:
        return (f"{flags.family} emits ternary events (+1/-1{', scaled' if flags.family == 'LITS' else ''}); "
                "NIR neurons emit 0/1 spikes", f"{near} with quant_fn=round_ste()")
    if flags.fires:
        kind, step = quant_name(layer.quant_fn)
        alt = f"{flags.name} with quant_fn=round_ste()"
        if kind == "identity":
            return ("graded output: quant_fn is the identity, so the layer outputs spike_fn(mem - threshold + bias), "
                    "a value in (0, 1), not spikes; NIR LIF neurons emit binary spikes", alt)
        if kind in ("stochastic_round_ste", "probabilistic_ste"):
            return (f"stochastic quantizer ({kind}): its events are random draws; NIR neurons are deterministic", alt)
        if kind is None:
            return (f"quant_fn {type(layer.quant_fn).__name__} is not a built-in quantizer", alt)
        if step != 1.0:
            return (f"round_ste(step_size={step:g}) emits events of size {step:g}; NIR spikes are 0/1", alt)
        if _spike_name(layer.spike_fn) is None:
            return ("a custom spike_fn: the firing condition is no longer mem > threshold - bias",
                    f"{flags.name} with the default spike_fn (sigmoid4x)")
    if flags.recurrent and len(shape) != 1:
        return (f"a recurrent layer on input of shape {list(shape)}: NIR's recurrent weight is a Linear over "
                "one-dimensional features", f"{flags.name} after a Flatten")
    return None


def _per_neuron(layer: NeuronLayer, name: str) -> np.ndarray:
    value = layer.param_value(name).detach().to(torch.float64).cpu().numpy()
    return np.array(np.broadcast_to(value, (layer.num_neurons,)))


def _spread(values: np.ndarray, shape: tuple[int, ...], dim: int) -> np.ndarray:
    """Per-neuron values ``[N]`` broadcast to a NIR node's shape, neurons at ``dim``."""
    trailing = -dim - 1
    return np.array(np.broadcast_to(values.reshape(values.shape + (1,) * trailing), shape), dtype=np.float64)


def _approximate_params(layer: NeuronLayer) -> tuple[Flags, dict[str, np.ndarray]]:
    """The flags and per-neuron parameters of :func:`nearest` (positive branch, positive threshold)."""
    flags = layer.flags
    near = Flags(False, flags.synaptic, flags.recurrent, "LIB" if flags.ternary else flags.family)
    p: dict[str, np.ndarray] = {}
    for name in ("alpha", "beta", "gamma", "rec_weight"):
        source = f"pos_{name}" if flags.dual else name
        if source in layer.param_names():
            p[name] = _per_neuron(layer, source)
    if flags.fires:
        p["threshold"] = _per_neuron(layer, "pos_threshold" if flags.ternary else "threshold")
        p["bias"] = _per_neuron(layer, "bias")
    return near, p


def export_neuron(layer: NeuronLayer, shape: tuple[int, ...], dt: float, approximate: bool = False) -> nir.NIRNode:
    """The NIR node (or subgraph, for ``R`` layers) of ``layer`` on per-sample input ``shape``, tagged.

    The caller checks :func:`refusal` first; with ``approximate`` the node is the one of
    :func:`nearest`, tagged so that :func:`layer_from_tag` rebuilds the exact layer.
    """
    flags, p = _approximate_params(layer)
    exact = refusal(layer, shape) is None
    node = _emit(flags, p, shape, layer.dim, dt)
    node.metadata["tracetorch"] = tag_for(layer, exact)
    node.metadata["tracetorch"]["fingerprint"] = fingerprint(node)
    return node


def _emit(flags: Flags, p: dict[str, np.ndarray], shape: tuple[int, ...], dim: int, dt: float) -> nir.NIRNode:
    spread = lambda values: _spread(values, shape, dim)  # noqa: E731
    tau = lambda decay: spread(dt / (1.0 - decay))  # noqa: E731
    beta = p["beta"]
    r = spread(np.ones_like(beta) if flags.ema else 1.0 / (1.0 - beta))
    zeros = spread(np.zeros_like(beta))
    if not flags.fires:
        if flags.synaptic:
            return nir.CubaLI(tau_syn=tau(p["alpha"]), tau_mem=tau(beta), r=r, v_leak=zeros, w_in=spread(np.ones_like(beta)))
        return nir.LI(tau=tau(beta), r=r, v_leak=zeros)
    reset = {"reset": "subtract", "reset_amount": spread(p["threshold"])}
    v_threshold = spread(p["threshold"] - p["bias"])
    if flags.synaptic and not flags.recurrent:
        return nir.CubaLIF(tau_syn=tau(p["alpha"]), tau_mem=tau(beta), r=r, v_leak=zeros, v_threshold=v_threshold,
                           v_reset=zeros.copy(), w_in=spread(np.ones_like(beta)), metadata=reset)
    lif = nir.LIF(tau=tau(beta), r=r, v_leak=zeros, v_threshold=v_threshold, v_reset=zeros.copy(), metadata=reset)
    if not flags.recurrent:
        return lif
    ones = np.ones_like(beta)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(shape)), "neuron": lif,
                                     "rec": nir.Linear(weight=np.diag(p["rec_weight"])),
                                     "output": nir.Output(output_type=np.array(shape))}
    edges = [("neuron", "rec"), ("rec", "neuron"), ("neuron", "output")]
    if flags.synaptic:
        nodes["synapse"] = nir.LI(tau=tau(p["alpha"]), r=ones.copy(), v_leak=zeros.copy())
        edges += [("input", "synapse"), ("synapse", "neuron")]
    else:
        edges.append(("input", "neuron"))
    if np.any(p["gamma"] != 0.0):
        nodes["trace"] = nir.LI(tau=tau(p["gamma"]), r=ones.copy(), v_leak=zeros.copy())
        edges = [e for e in edges if e != ("neuron", "rec")] + [("neuron", "trace"), ("trace", "rec")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={})


# tags: what NIR cannot hold, so that from_nir rebuilds the exact layer ---------------------------------------------


def stateless_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every traceTorch state ``None`` (the original's states stay as they were).

    Held states may be part of an autograd graph, which ``copy.deepcopy`` refuses.
    """
    from tracetorch.core.states import restore_states, snapshot_states, zero_states

    held = snapshot_states(module)
    try:
        zero_states(module)
        return copy.deepcopy(module)
    finally:
        restore_states(held)


def tag_for(layer: NeuronLayer, exact: bool) -> dict[str, Any]:
    """The layer, its raw parameters bit for bit, and its functions, as HDF5-storable metadata."""
    plain = stateless_copy(layer).TTuncompile()
    params: dict[str, Any] = {}
    for name in plain.param_names():
        stored = getattr(plain, f"raw_{name}")
        raw = stored.detach().cpu()
        info = plain.param_info(name)
        params[name] = {"raw": raw.numpy().reshape(-1).copy(),  # 1-d: HDF5 compresses no scalars
                        "rank": info.rank, "learn": bool(info.learn), "frozen": bool(info.learn and not stored.requires_grad)}
    tag: dict[str, Any] = {"layer": layer.flags.name, "num_neurons": layer.num_neurons, "dim": layer.dim,
                           "exact": bool(exact), "params": params}
    if layer.flags.fires:
        kind, step = quant_name(layer.quant_fn)
        spike = _spike_name(layer.spike_fn)
        if kind is None or spike is None:
            raise ValueError(f"{layer.flags.name}: only built-in quantizers and the default spike_fn can be exported")
        tag.update(quant_fn=kind, quant_step=step, spike_fn=spike)
    return tag


def layer_from_tag(tag: dict[str, Any]) -> NeuronLayer:
    """Rebuild the exact layer a :func:`tag_for` tag describes."""
    from tracetorch import functional as F

    name = str(tag["layer"])
    if name not in LAYERS:
        raise ValueError(f"unknown traceTorch layer {name!r} in the tag")
    kwargs: dict[str, Any] = {"dim": int(tag["dim"])}
    params = tag["params"]
    for pname, entry in params.items():
        kwargs[f"{pname}_rank"] = int(entry["rank"])
        kwargs[f"learn_{pname}"] = bool(entry["learn"])
    if "quant_fn" in tag:
        kind, step = str(tag["quant_fn"]), float(tag["quant_step"])
        makers = {"identity": lambda: nn.Identity(), "round_ste": lambda: F.round_ste(step),
                  "stochastic_round_ste": lambda: F.stochastic_round_ste(step), "probabilistic_ste": F.probabilistic_ste}
        if kind not in makers:
            raise ValueError(f"unknown quant_fn {kind!r} in the tag")
        kwargs["quant_fn"] = makers[kind]()
    layer = LAYERS[name](int(tag["num_neurons"]), **kwargs)
    if sorted(params) != sorted(layer.param_names()):
        raise ValueError(f"the tag's parameters {sorted(params)} are not those of {name}")
    for pname, entry in params.items():
        raw = getattr(layer, f"raw_{pname}")
        value = torch.as_tensor(np.asarray(entry["raw"]))
        if value.numel() != raw.numel():
            raise ValueError(f"{name}.{pname}: raw value of shape {tuple(value.shape)}, expected {tuple(raw.shape)}")
        value = value.reshape(raw.shape)
        with torch.no_grad():
            raw.copy_(value.to(raw.dtype))
        if bool(entry.get("frozen", False)):
            raw.requires_grad_(False)
        value = layer.param_value(pname).detach().clone()
        layer._config[pname] = float(value) if value.ndim == 0 else value  # the repr and model_to_spec show the values
    return layer


def fingerprint(node: nir.NIRNode) -> str:
    """SHA-256 of a node's numbers and structure (not its metadata): tells an edited node from a written one."""
    digest = hashlib.sha256()

    def feed(obj: nir.NIRNode) -> None:
        digest.update(type(obj).__name__.encode())
        if isinstance(obj, nir.NIRGraph):
            for key in sorted(obj.nodes):
                digest.update(key.encode())
                feed(obj.nodes[key])
            for src, dst in sorted(obj.edges):
                digest.update(f"{src}->{dst};".encode())
            return
        for key, value in sorted(obj.to_dict().items()):
            if key in ("metadata", "type", "input_type", "output_type"):
                continue
            array = np.asarray(value, dtype=np.float64) if not isinstance(value, str) else np.frombuffer(value.encode(), np.uint8)
            digest.update(key.encode() + str(array.shape).encode() + np.ascontiguousarray(array).tobytes())

    feed(node)
    return digest.hexdigest()

