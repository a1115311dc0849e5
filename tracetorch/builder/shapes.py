"""Shape inference: fill in sizes a spec omits and check the ones it gives.

Shapes here are per sample (no batch, no time), like ``input_shape``. An argument is
inferred by name, so registered layers get the same treatment as built-in ones:

====================  =========================================================
``num_neurons``       size of the input at ``dim`` (``dim`` inferred: -1 for
                      ``[F]``, the channel dimension -len(shape) for ``[C, ...]``)
``in_features``       last size
``in_channels``       first size (channels)
``num_features``      first size (channels / features, BatchNorm)
``normalized_shape``  last size
====================  =========================================================

Output shapes come from running the module once on zeros of shape ``[1, *shape]``
(in eval mode, without gradients); neuron layers keep their input shape.

Example:
    >>> infer_arguments("LIB", ["num_neurons", "dim"], {}, (32, 14, 14))
    ({'dim': -3, 'num_neurons': 32}, [])
    >>> infer_arguments("Linear", ["in_features"], {"in_features": 100}, (784,))[1]
    [('in_features', 'Linear in_features is 100 but its input has 784 features (input shape [784])')]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.snn.layer import NeuronLayer

__all__ = ["Shape", "ShapeProblem", "infer_arguments", "output_shape", "show"]

Shape = tuple[int, ...]

_BY_NAME: dict[str, tuple[Callable[[Shape], Any], str, int]] = {
    # argument: (size from shape, what the size is, minimum rank of the shape)
    "in_features": (lambda s: s[-1], "features", 1),
    "in_channels": (lambda s: s[0], "channels", 2),
    "num_features": (lambda s: s[0], "channels", 1),
    "normalized_shape": (lambda s: [s[-1]], "as its last size", 1),  # checked against the trailing sizes
}


class ShapeProblem(ValueError):
    """A layer that cannot take the shape its input has."""


def show(shape: Sequence[int] | None) -> str:
    return "unknown" if shape is None else "[" + ", ".join(str(s) for s in shape) + "]"


def infer_arguments(
    layer: str, accepted: Sequence[str], kwargs: dict[str, Any], shape: Shape | None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``kwargs`` with inferable sizes filled in from ``shape``, and ``(argument, reason)`` problems."""
    out = dict(kwargs)
    problems: list[tuple[str, str]] = []
    if "num_neurons" in accepted:
        problems += _neurons(layer, accepted, out, shape)
    for arg, (size_of, what, min_rank) in _BY_NAME.items():
        if arg not in accepted:
            continue
        if shape is None:
            if arg not in out:
                problems.append((arg, f"{layer} needs {arg}: give it, or give the model an input_shape to infer it"))
            continue
        if len(shape) < min_rank:
            problems.append((arg, f"{layer} expects an input with channels, got input shape {show(shape)}"))
            continue
        if arg == "normalized_shape" and arg in out:
            given = _normalize(out[arg])
            if list(shape[-len(given):]) != given or len(given) > len(shape):
                problems.append((arg, f"{layer} normalized_shape is {show(given)} but its input shape is {show(shape)}"))
            continue
        actual = size_of(shape)
        given = out.setdefault(arg, actual)
        if given != actual:
            problems.append((arg, f"{layer} {arg} is {given} but its input has {actual} {what} (input shape {show(shape)})"))
    return out, problems


def _normalize(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else ([value] if isinstance(value, int) else value)


def _neurons(layer: str, accepted: Sequence[str], out: dict[str, Any], shape: Shape | None) -> list[tuple[str, str]]:
    if shape is None:
        if "num_neurons" not in out:
            return [("num_neurons", f"{layer} needs num_neurons: give it, or give the model an input_shape to infer it")]
        return []
    if "dim" in out:
        dim = out["dim"]
        if dim == 0 or not -len(shape) <= dim <= len(shape):
            why = "dim 0 is the batch dimension" if dim == 0 else f"input shape {show(shape)} (batch excluded) has no dim {dim}"
            return [("dim", f"{layer}: {why}; valid dims are 1..{len(shape)} and -{len(shape)}..-1")]
    elif "dim" in accepted:
        dim = -1 if len(shape) == 1 else -len(shape)
        if dim != -1:
            out["dim"] = dim
    else:
        dim = -1
    actual = shape[dim] if dim < 0 else shape[dim - 1]
    given = out.setdefault("num_neurons", actual)
    if given != actual:
        return [("num_neurons", f"{layer} num_neurons is {given} but its input has {actual} at dim {dim} "
                                f"(input shape {show(shape)})")]
    return []


def output_shape(module: nn.Module, shape: Shape, layer: str, device: str | torch.device | None = None) -> Shape:
    """The per-sample output shape of ``module`` for per-sample input ``shape`` (run on ``device``, default the module's)."""
    if isinstance(module, NeuronLayer):
        return shape
    known = _analytic(module, shape)
    if known is not None:
        return known
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *shape, device=device or _device_of(module)))
    except Exception as err:  # any failure to run is a shape problem of the spec
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ShapeProblem(f"{layer} cannot take an input of shape {show(shape)}: {first}") from None
    finally:
        module.train(was_training)
        if callable(getattr(module, "zero_states", None)):
            module.zero_states()
    if not isinstance(out, Tensor) or out.ndim == 0 or out.shape[0] != 1:
        raise ShapeProblem(f"{layer} must return a tensor that keeps the batch dimension, got {_what(out)}")
    return tuple(out.shape[1:])


def _analytic(module: nn.Module, shape: Shape) -> Shape | None:
    """The output shape of common layers by their formula (running them on the meta device would load
    PyTorch's Python decompositions, about a second); ``None`` when the module must be run to know."""
    kind = type(module)
    if kind in (nn.Identity, nn.Dropout) or (kind is nn.LayerNorm and tuple(shape[-len(module.normalized_shape):]) ==
                                              tuple(module.normalized_shape)):
        return shape
    if kind in (nn.BatchNorm1d, nn.BatchNorm2d) and len(shape) in _BATCHNORM_RANKS[kind] and shape[0] == module.num_features:
        return shape
    if kind is nn.Flatten:
        full = (1, *shape)
        start, end = module.start_dim % len(full), module.end_dim % len(full)
        if start <= end:
            return (*full[:start], math.prod(full[start:end + 1]), *full[end + 1:])[1:] if start > 0 else None
    if kind is nn.Linear and shape and shape[-1] == module.in_features:
        return (*shape[:-1], module.out_features)
    if kind in (nn.Conv1d, nn.Conv2d) and isinstance(module.padding, tuple) and len(shape) == len(module.kernel_size) + 1 \
            and shape[0] == module.in_channels:
        sizes = [_window(*args) for args in zip(shape[1:], module.kernel_size, module.stride, module.padding,
                                                module.dilation, [False] * len(shape))]
        return (module.out_channels, *sizes) if all(size > 0 for size in sizes) else None
    if kind in (nn.MaxPool2d, nn.AvgPool2d) and len(shape) == 3:
        pairs = [_pair(getattr(module, key, 1)) for key in ("kernel_size", "stride", "padding", "dilation")]
        kernel, stride, padding, dilation = pairs[0], _pair(module.stride or module.kernel_size), pairs[2], pairs[3]
        sizes = [_window(*args) for args in zip(shape[1:], kernel, stride, padding, dilation, [module.ceil_mode] * 2)]
        return (shape[0], *sizes) if all(size > 0 for size in sizes) else None
    if kind is nn.AdaptiveAvgPool2d and len(shape) == 3:
        size = module.output_size
        pair = (size, size) if isinstance(size, int) or size is None else tuple(size)
        return (shape[0], *(given if s is None else s for s, given in zip(pair, shape[1:])))  # type: ignore[misc]
    return None


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _window(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    """Output length of a convolution or pooling window (PyTorch's formula, ``ceil_mode`` included)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:  # the last window must start inside the input
        out -= 1
    return out


_BATCHNORM_RANKS = {nn.BatchNorm1d: (1, 2), nn.BatchNorm2d: (3,)}


def _device_of(module: nn.Module) -> torch.device:
    """Where ``module`` keeps its tensors (the meta device during validation)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _what(out: Any) -> str:
    return f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
