"""The sequence runner: ``run(module, x_seq)`` for any module over ``[T, ...]``.

* traceTorch layers and models use their own ``run`` (fused paths where available);
* stateless modules whose per-sample output does not depend on the rest of the batch
  (Linear, convolutions, pooling, Flatten, ...) fold time into the batch and run as
  one call instead of T. Three plain modules (exactly that type, no hooks) take compiled
  paths: ``nn.Linear`` on spikes (all 0/1) runs event-driven
  (:mod:`tracetorch.kernels.event_linear`), ``nn.Conv2d`` on spikes gets its weight gradient
  from the spikes' index (:mod:`tracetorch.kernels.event_conv`), ``nn.MaxPool2d`` pools with a
  one-byte argmax (:mod:`tracetorch.kernels.pooling`). This runner makes that choice, and
  imports those modules (and with them the C++ loader) only when it folds such a module, so
  that importing or building a model never touches the C++ toolchain;
* anything else (BatchNorm in training mode, Dropout in training mode, modules with
  their own state) is stepped one timestep at a time, which is always exact.

``tt.Sequential.run`` calls :func:`run_chain`: :func:`run` for each of its modules, except that a
neuron layer followed by a plain ``nn.MaxPool2d`` runs as one call of the layer's ``run_pooled``
(the C++ kernel then pools as it computes, see :func:`tracetorch.kernels.dispatch.explain_pooled`).

Example:
    >>> import torch
    >>> from tracetorch.kernels.sequence import run
    >>> run(torch.nn.Linear(3, 2), torch.rand(5, 4, 3)).shape
    torch.Size([5, 4, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["run", "run_chain", "step_through", "fold_time", "is_time_foldable"]

_FOLDABLE = (
    nn.Linear, nn.Bilinear, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.LayerNorm, nn.GroupNorm, nn.ReLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax,
)
_TRAIN_DEPENDENT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def is_time_foldable(module: nn.Module) -> bool:
    """True when running ``[T*B, ...]`` at once equals T calls on ``[B, ...]``."""
    if isinstance(module, _FOLDABLE):
        return True
    if isinstance(module, _TRAIN_DEPENDENT):
        return not module.training
    return False


def step_through(module: nn.Module, x_seq: Tensor) -> Tensor:
    """Call ``module`` once per timestep and stack the outputs."""
    return torch.stack([module(x_t) for x_t in x_seq.unbind(0)])


def _has_hooks(module: nn.Module) -> bool:
    """True when calling ``module`` does more than its ``forward`` (hooks of its own or global ones)."""
    from torch.nn.modules import module as torch_module

    own = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    shared = (torch_module._global_forward_hooks, torch_module._global_forward_pre_hooks,
              torch_module._global_backward_hooks, torch_module._global_backward_pre_hooks)
    return any(len(hooks) > 0 for hooks in (*own, *shared))


def fold_time(module: nn.Module, x_seq: Tensor) -> Tensor:
    """One call on ``[T*B, ...]``, reshaped back to ``[T, B, ...]``."""
    steps, batch = x_seq.shape[0], x_seq.shape[1]
    folded = x_seq.reshape(steps * batch, *x_seq.shape[2:])
    compiled = _COMPILED_PATHS.get(type(module))
    if compiled is not None and not _has_hooks(module):
        out = compiled(module, folded)
    else:
        out = module(folded)
    return out.reshape(steps, batch, *out.shape[1:])


def _linear(module: nn.Linear, x: Tensor) -> Tensor:
    from tracetorch.kernels.event_linear import linear  # on first use: the C++ loader comes with it

    return linear(x, module.weight, module.bias)


def _conv2d(module: nn.Conv2d, x: Tensor) -> Tensor:
    from tracetorch.kernels.event_conv import conv2d

    return conv2d(module, x)


def _max_pool2d(module: nn.MaxPool2d, x: Tensor) -> Tensor:
    from tracetorch.kernels.pooling import max_pool2d

    return max_pool2d(module, x)


_COMPILED_PATHS: dict[type, Callable[[Any, Tensor], Tensor]] = {
    nn.Linear: _linear, nn.Conv2d: _conv2d, nn.MaxPool2d: _max_pool2d,
}
"""The modules (exact type) whose folded call takes a compiled path; each falls back to the module itself."""


def run(module: nn.Module, x_seq: Tensor) -> Tensor:
    """Run ``module`` over a whole sequence ``[T, ...]`` and return ``[T, ...]``."""
    if not isinstance(x_seq, Tensor) or x_seq.ndim < 1:
        raise ValueError(f"run() expects a tensor of shape [T, ...], got {getattr(x_seq, 'shape', type(x_seq))}")
    own_run = getattr(module, "run", None)
    if callable(own_run):
        return own_run(x_seq)
    if x_seq.ndim >= 2 and is_time_foldable(module):
        return fold_time(module, x_seq)
    return step_through(module, x_seq)


def run_chain(modules: Sequence[nn.Module], x_seq: Tensor) -> Tensor:
    """Run ``modules`` in turn over a whole sequence ``[T, ...]``, as :func:`run` each.

    A module with a ``run_pooled`` method (a neuron layer) followed by a plain ``nn.MaxPool2d``
    (exactly that type, no hooks) runs the pair as ``module.run_pooled(x_seq, pool)``: the same
    result, in one fused kernel call where the kernels cover it.
    """
    modules = list(modules)
    index = 0
    while index < len(modules):
        module = modules[index]
        following = modules[index + 1] if index + 1 < len(modules) else None
        run_pooled = getattr(module, "run_pooled", None)
        if callable(run_pooled) and type(following) is nn.MaxPool2d and not _has_hooks(following):
            x_seq = run_pooled(x_seq, following)
            index += 2
        else:
            x_seq = run(module, x_seq)
            index += 1
    return x_seq
