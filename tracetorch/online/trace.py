"""Trace learning: weight gradients from a decaying presynaptic trace instead of BPTT.

A ``Linear`` or ``Conv`` module feeding a spiking layer is wrapped so that it keeps a
trace of its (detached) inputs, a hidden state like any other::

    a_t = lam * a_(t-1) + x_t            c_t = lam * c_(t-1) + 1   (the bias' input is 1)

and its backward pass uses that trace in place of the input::

    dL/dW += g_t (x) a_t                 dL/db += sum(g_t) * c_t       dL/dx_t = W^T g_t   (as usual)

where ``g_t`` is the gradient arriving at the module's output at step ``t``. With the
neuron states detached after every step (``detach_states()``) this is Online Training
Through Time (OTTT, Xiao et al., NeurIPS 2022): memory and time per step do not depend on
the sequence length. ``lam`` defaults to the decay ``beta`` of the layer the module
feeds, read at every step (so a learned ``beta`` is followed):

* ``beta`` of rank 0 is used as is; of rank 1 (one per neuron) its mean is used (one
  trace per synapse would cost ``out * in`` per sample);
* dual layers (``pos_beta``/``neg_beta``) use the mean of both branches;
* synaptic (``S``) layers also filter with ``alpha``; the trace still uses ``beta``
  (the slower, membrane time constant); pass ``lam`` to choose otherwise.

For a ``Linear -> LI`` pair with a scalar ``beta`` and ``lam = beta`` the trace gradient
equals the BPTT gradient exactly; with a threshold and reset (``LIB`` ...) it is the
OTTT approximation (the reset's and the recurrence's paths through time are dropped).

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.online import enable_trace_learning
    >>> net = tt.Sequential(torch.nn.Linear(4, 3), tt.snn.LIB(3, beta=0.8), torch.nn.Linear(3, 2), tt.snn.LI(2))
    >>> enable_trace_learning(net)
    ['0', '2']
    >>> net[0]
    TraceLinear(in_features=4, out_features=3, bias=True, lam=from LIB)
    >>> _ = net(torch.rand(5, 4)); sorted(net.save_states())[:2]
    ['0.bias_trace', '0.trace']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracetorch.core.graph import Graph
from tracetorch.core.layer import Layer
from tracetorch.core.model import Sequential, iter_layers

__all__ = [
    "TraceSynapse", "TraceLinear", "TraceConv", "trace_wrap", "enable_trace_learning",
    "disable_trace_learning", "reset_traces", "decay_of", "PASS_THROUGH",
]

#: Modules allowed between a Linear/Conv and the spiking layer it feeds.
PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def decay_of(layer: nn.Module) -> Tensor:
    """The trace decay a layer implies: ``beta`` (mean if per neuron), dual: mean of both.

    Raises ``ValueError`` when the layer has no ``beta``/``pos_beta``/``neg_beta``.

    Example:
        >>> import tracetorch as tt
        >>> round(float(decay_of(tt.snn.DLIB(2, pos_beta=0.8, neg_beta=0.6))), 4)
        0.7
    """
    names = layer.param_names() if isinstance(layer, Layer) else []
    if "beta" in names:
        keys = ["beta"]
    elif "pos_beta" in names and "neg_beta" in names:
        keys = ["pos_beta", "neg_beta"]
    else:
        raise ValueError(
            f"cannot infer the trace decay from {type(layer).__name__}: it has no 'beta' (or 'pos_beta'/'neg_beta') "
            f"parameter; pass lam= explicitly"
        )
    values = [layer.param_value(k).detach().mean() for k in keys]
    return torch.stack(values).mean()


@dataclass(frozen=True)
class _LinearOp:
    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def backward(self, grad: Tensor, trace: Tensor, weight: Tensor, mask: tuple[bool, bool]) -> tuple[Tensor | None, ...]:
        grad_x = grad @ weight if mask[0] else None
        grad_w = grad.reshape(-1, grad.shape[-1]).t() @ trace.reshape(-1, trace.shape[-1]) if mask[1] else None
        return grad_x, grad_w

    def bias_grad(self, grad: Tensor) -> Tensor:
        return grad.reshape(-1, grad.shape[-1]).sum(0)


@dataclass(frozen=True)
class _ConvOp:
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[weight.ndim - 3]
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def backward(self, grad: Tensor, trace: Tensor, weight: Tensor, mask: tuple[bool, bool]) -> tuple[Tensor | None, ...]:
        # grad_input depends only on the input's shape, so the trace stands in for the input.
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad, trace, weight, None, self.stride, self.padding, self.dilation,
            False, [0] * len(self.stride), self.groups, [mask[0], mask[1], False],
        )
        return grad_x, grad_w

    def bias_grad(self, grad: Tensor) -> Tensor:
        return grad.sum(dim=[d for d in range(grad.ndim) if d != 1])


class _TraceFunction(torch.autograd.Function):
    """forward: the usual op; backward: weight (and bias) gradients from the traces."""

    @staticmethod
    def forward(ctx, x, weight, bias, trace, count, op):  # type: ignore[no-untyped-def, override]
        ctx.op = op
        ctx.has_bias = bias is not None
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(weight, trace, count)
        return op.forward(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        weight, trace, count = ctx.saved_tensors
        need = ctx.needs_input_grad
        # under autocast the output (so grad) may be half precision: compute in grad's dtype, return in the inputs'
        low = grad.dtype
        grad_x, grad_w = ctx.op.backward(grad, trace.to(low), weight.to(low), (need[0], need[1]))
        grad_x = grad_x.to(ctx.x_dtype) if grad_x is not None else None
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = (ctx.op.bias_grad(grad) * count).to(weight.dtype) if ctx.has_bias and need[2] else None
        return grad_x, grad_w, grad_b, None, None, None


class TraceSynapse(Layer):
    """Base of the trace wrappers: shares ``weight``/``bias`` with the wrapped module.

    States: ``trace`` (shaped like the input) and, with a bias, ``bias_trace`` (one
    value broadcast to the input's shape: an expanded view, no extra memory). ``lam`` is
    a float in [0, 1), or ``None`` to read the decay of ``source`` at every step.
    """

    def __init__(self, module: nn.Module, num_inputs: int, dim: int, lam: float | None, source: nn.Module | None):
        super().__init__(num_inputs, dim)
        if lam is None and source is None:
            raise ValueError(f"{type(self).__name__}: give lam (a float in [0, 1)) or source (the layer it feeds)")
        if lam is not None:
            if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam < 1.0:
                raise ValueError(f"{type(self).__name__}: lam must be a float in [0, 1), got {lam!r}")
            lam = float(lam)
        elif source is not None:
            decay_of(source)  # fail now, not at the first step
        self.lam = lam
        object.__setattr__(self, "_source", source)  # kept out of the module tree and the layer walk
        object.__setattr__(self, "_plain", module)
        self.register_parameter("weight", module.weight)
        self.register_parameter("bias", module.bias)
        self.register_state("trace")
        if self.bias is not None:
            self.register_state("bias_trace")

    def decay(self) -> Tensor | float:
        """The current trace decay ``lam`` (the source layer's, when not fixed)."""
        return self.lam if self.lam is not None else decay_of(self._source)

    def _op(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def _prepare(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        """One step: update the traces, then the module's output (trace gradients)."""
        x = self.check_input(x)
        lam = self.decay()
        if isinstance(lam, Tensor):
            lam = lam.to(device=x.device, dtype=x.dtype)
        inp = x.detach()
        self.trace = inp if self.trace is None else self.trace * lam + inp
        count = torch.ones((), device=x.device, dtype=x.dtype)
        if self.bias is not None:
            if self.bias_trace is not None:
                count = self.bias_trace[(0,) * self.bias_trace.ndim] * lam + 1
            self.bias_trace = count.expand(x.shape)
        return _TraceFunction.apply(self._prepare(x), self.weight, self.bias, self._prepare(self.trace), count, self._op())

    def unwrap(self) -> nn.Module:
        """The plain module again, sharing this wrapper's parameters."""
        plain = self._plain
        plain.weight = self.weight
        plain.bias = self.bias
        return plain

    def _lam_repr(self) -> str:
        return f"lam={self.lam:g}" if self.lam is not None else f"lam=from {type(self._source).__name__}"


class TraceLinear(TraceSynapse):
    """``nn.Linear`` with trace learning (see the module docstring).

    Example:
        >>> import torch
        >>> fc = TraceLinear(torch.nn.Linear(3, 2), lam=0.5)
        >>> _ = fc(torch.ones(1, 3)); fc(torch.ones(1, 3)).sum().backward()
        >>> fc.weight.grad  # g = 1, a = 1 + 0.5 * 1
        tensor([[1.5000, 1.5000, 1.5000],
                [1.5000, 1.5000, 1.5000]])
    """

    def __init__(self, module: nn.Linear, lam: float | None = None, source: nn.Module | None = None):
        if not isinstance(module, nn.Linear):
            raise TypeError(f"TraceLinear wraps an nn.Linear, got {type(module).__name__}")
        super().__init__(module, module.in_features, -1, lam, source)
        self.in_features, self.out_features = module.in_features, module.out_features

    def _op(self) -> _LinearOp:
        return _LinearOp()

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}, {self._lam_repr()}"


class TraceConv(TraceSynapse):
    """``nn.Conv1d/2d/3d`` with trace learning; any padding (mode) the module uses.

    Example:
        >>> import torch
        >>> conv = TraceConv(torch.nn.Conv2d(2, 4, 3, padding=1), lam=0.9)
        >>> conv(torch.rand(8, 2, 5, 5)).shape
        torch.Size([8, 4, 5, 5])
    """

    def __init__(self, module: nn.Conv1d | nn.Conv2d | nn.Conv3d, lam: float | None = None, source: nn.Module | None = None):
        if not isinstance(module, _CONVS):
            raise TypeError(f"TraceConv wraps an nn.Conv1d/Conv2d/Conv3d, got {type(module).__name__}")
        spatial = len(module.kernel_size)
        super().__init__(module, module.in_channels, -(spatial + 1), lam, source)
        explicit = isinstance(module.padding, str) or module.padding_mode != "zeros"
        # string paddings ('same') and non-zero modes are applied with F.pad, as nn.Conv does
        self._pad = tuple(module._reversed_padding_repeated_twice) if explicit else None
        self._pad_mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        padding = (0,) * spatial if explicit else tuple(module.padding)
        self._conv_op = _ConvOp(tuple(module.stride), padding, tuple(module.dilation), module.groups)
        self.summary = repr(module)

    def _op(self) -> _ConvOp:
        return self._conv_op

    def _prepare(self, x: Tensor) -> Tensor:
        return x if self._pad is None else F.pad(x, self._pad, mode=self._pad_mode)

    def extra_repr(self) -> str:
        return f"{self.summary}, {self._lam_repr()}"


def trace_wrap(module: nn.Module, lam: float | None = None, source: nn.Module | None = None) -> TraceSynapse:
    """Wrap one ``nn.Linear`` / ``nn.Conv1d/2d/3d`` for trace learning."""
    if isinstance(module, TraceSynapse):
        return module
    if isinstance(module, nn.Linear):
        return TraceLinear(module, lam, source)
    if isinstance(module, _CONVS):
        return TraceConv(module, lam, source)
    raise TypeError(f"trace learning wraps nn.Linear and nn.Conv1d/2d/3d, got {type(module).__name__}")


def _feeds(children: list[nn.Module], index: int) -> nn.Module | None:
    """The spiking layer that ``children[index]`` feeds, skipping pass-through modules."""
    for module in children[index + 1:]:
        if isinstance(module, PASS_THROUGH):
            continue
        return module if isinstance(module, Layer) and not isinstance(module, TraceSynapse) else None
    return None


def _is_spiking(module: nn.Module) -> bool:
    try:
        decay_of(module)
    except ValueError:
        return False
    return True


def enable_trace_learning(model: nn.Module, lam: float | None = None) -> list[str]:
    """Wrap, in place, every Linear/Conv that feeds a spiking layer in a sequential container.

    Inside each ``tt.Sequential`` / ``nn.Sequential`` of ``model`` (nested ones too), a
    ``Linear``/``Conv`` followed (possibly through :data:`PASS_THROUGH` modules such as
    pooling, Flatten, Dropout, BatchNorm) by a layer with a ``beta`` is replaced by its
    trace wrapper; the parameters are the same objects, so an existing optimizer keeps
    working. A Linear/Conv feeding no spiking layer (e.g. a plain readout) is left as is:
    without a state after it, its per-step gradient is already exact. ``lam=None`` reads
    the fed layer's decay (see :func:`decay_of`). Returns the dotted names wrapped
    (already wrapped ones included). For other model layouts wrap modules yourself with
    :func:`trace_wrap` (``source=`` the layer fed, or a fixed ``lam``).
    """
    wrapped = []
    for prefix, container in list(model.named_modules()):
        if not isinstance(container, (nn.Sequential, Sequential)):
            continue
        names = list(container._modules)
        children = list(container._modules.values())
        for index, (name, child) in enumerate(zip(names, children)):
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, TraceSynapse):
                wrapped.append(path)
                continue
            if not isinstance(child, (nn.Linear, *_CONVS)):
                continue
            target = _feeds(children, index)
            if target is None or not _is_spiking(target):
                continue
            container._modules[name] = trace_wrap(child, lam, target if lam is None else None)
            wrapped.append(path)
    if isinstance(model, Graph):
        wrapped += _wrap_graph(model, lam)
    if not wrapped:
        raise ValueError(
            f"enable_trace_learning: no Linear/Conv feeding a spiking layer found in a Sequential container of "
            f"{type(model).__name__}; wrap modules yourself with trace_wrap(module, source=layer) or lam=..."
        )
    return wrapped


def _wrap_graph(model: Graph, lam: float | None) -> list[str]:
    """In a graph, a Linear/Conv node whose output reaches a spiking node through pass-through nodes alone."""
    wrapped = []
    for node in model.graph_nodes:
        if node.op != "module":
            continue
        child = model.module(node.name)
        if isinstance(child, TraceSynapse):
            wrapped.append(f"nodes.{node.name}")
            continue
        if not isinstance(child, (nn.Linear, *_CONVS)):
            continue
        target = _feeds([child, *model.chain_after(node.name)], 0)
        if target is None or not _is_spiking(target):
            continue
        model.nodes.put(node.name, trace_wrap(child, lam, target if lam is None else None))
        wrapped.append(f"nodes.{node.name}")
    return wrapped


def disable_trace_learning(model: nn.Module) -> list[str]:
    """Put the plain modules back (same parameters); returns the dotted names unwrapped."""
    restored = []
    for prefix, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, TraceSynapse):
                parent._modules[name] = child.unwrap()
                restored.append(f"{prefix}.{name}" if prefix else name)
    return restored


def reset_traces(model: nn.Module) -> None:
    """Zero the traces only (the neuron states are left as they are)."""
    for _, layer in iter_layers(model):
        if isinstance(layer, TraceSynapse):
            layer.zero_states()
