"""What the fused kernels share: the flat layout of a layer's sequence and its autograd wrapper.

A neuron layer's sequence ``[T, *step_shape]`` is viewed as ``x [T, M]`` (``M`` elements per
step); the neuron of element ``e`` is ``(e // inner) % N`` where ``inner`` is the number of
elements after the layer's ``dim``. Parameters go to the kernels as one ``[13, N]`` tensor of
*activated* values in fixed slots (:data:`tracetorch.snn.grammar.PARAM_SLOTS`; rank-0 values
expanded), states as one ``[7, M]`` tensor (:data:`tracetorch.snn.grammar.STATE_SLOTS`; ``None``
as zeros); the layer says which name fills which slot (:class:`~tracetorch.kernels.neuron_run.NeuronRun`).
Autograd flows through the stacking, so the activations, the rank-0 expansion and the reduction over the batch of the
per-element parameter gradients are ordinary torch ops, and the final states returned stay
connected to the graph exactly like the outputs.

A backend is an object with ``forward(x, params, init, uniforms, meta, save)`` returning
``(out, final, saved, pool_arg)`` and ``backward(grad_out, grad_final, x, params, init, uniforms, saved,
meta, init_grad, param_grad, pool_arg)`` returning ``(grad_x, grad_params, grad_init)``. With
``meta.pool`` (the CPU backend only) ``out`` is the layer's output max-pooled over the last two
dimensions of each step and ``pool_arg`` the position of each maximum in its window (``None``
otherwise); ``grad_out`` is then the gradient of the pooled output. ``init`` is ``None`` when the
layer holds no states (zeros), ``grad_final`` ``None`` when the final states get no gradient;
``grad_out`` has ``T`` rows, or one row when the output gradient is the same at every step (it is
then not materialized ``T`` times). ``grad_params`` is ``[13, N]`` (summed over the batch) or
per element ``[13, M]`` (summed here), and only read when ``param_grad`` (no parameter needs a
gradient otherwise: a backend may skip them); ``grad_init`` is only read when ``init_grad``. Rows of slots
a layer does not use may hold anything in ``final`` and ``grad_init``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from tracetorch.kernels.neuron_run import NeuronRun

__all__ = ["QUANT_CODES", "FAMILY_CODES", "STATE_ROWS", "Meta", "Backend", "fused_run"]

FAMILY_CODES = {"LI": 0, "LIEMA": 1, "LIB": 2, "LIT": 3, "LITS": 4}
QUANT_CODES = {"identity": 0, "round": 1, "stochastic_round": 2, "probabilistic": 3}
"""The kernels' codes for the family and the quantizer (``enum Family`` / ``enum Quant`` in ``neuron_kernels.h``)."""
STATE_ROWS = 7
"""Rows of the ``[7, M]`` states block: ``len(tracetorch.snn.grammar.STATE_SLOTS)`` (tests/test_kernel_layout.py checks)."""


@dataclass(frozen=True)
class Meta:
    """Everything a kernel needs besides tensors."""

    flags: Any  # tracetorch.snn.grammar.Flags
    quant: str
    step: float
    num_neurons: int
    inner: int
    need_x: bool
    pool: tuple[int, ...] = ()
    """``(H, W, kernel_h, kernel_w, stride_h, stride_w)`` of a max pooling of each step's last two dimensions fused
    after the layer, or ``()``."""

    @property
    def codes(self) -> tuple[bool, bool, bool, int, int]:
        f = self.flags
        return f.dual, f.synaptic, f.recurrent, FAMILY_CODES[f.family], QUANT_CODES[self.quant]


class Backend(Protocol):
    def forward(self, x: Tensor, params: Tensor, init: Tensor | None, uniforms: Tensor | None, meta: Meta,
                save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]: ...

    def backward(self, grad_out: Tensor, grad_final: Tensor | None, x: Tensor | None, params: Tensor,
                 init: Tensor | None, uniforms: Tensor | None, saved: Tensor, meta: Meta,
                 init_grad: bool, param_grad: bool, pool_arg: Tensor | None) -> tuple[Tensor, Tensor, Tensor]: ...


class _FusedSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, params: Tensor, init: Tensor | None, uniforms: Tensor | None,  # type: ignore[override]
                meta: Meta, backend: Backend, save: bool) -> tuple[Tensor, Tensor]:
        out, final, saved, pool_arg = backend.forward(x, params, init, uniforms, meta, save)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not a tensor of zeros
        if save:
            ctx.save_for_backward(x if meta.need_x else None, params, init, uniforms, saved, pool_arg)
        ctx.meta, ctx.backend, ctx.out_width = meta, backend, out.shape[1]
        return out, final

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor | None, grad_final: Tensor | None):  # type: ignore[override]
        x, params, init, uniforms, saved, pool_arg = ctx.saved_tensors
        meta: Meta = ctx.meta
        if grad_out is None:
            grad_out = params.new_zeros((1, ctx.out_width))
        elif grad_out.stride(0) == 0:  # the same at every step (e.g. a loss on out.mean(0)): pass one row
            grad_out = grad_out[:1].contiguous()
        else:
            grad_out = grad_out.contiguous()
        grad_final = None if grad_final is None else grad_final.contiguous()
        param_grad, init_grad = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        gx, gp, gi = ctx.backend.backward(grad_out, grad_final, x, params, init, uniforms, saved, meta, init_grad,
                                          param_grad, pool_arg=pool_arg)
        n, inner = meta.num_neurons, meta.inner
        gparams = None
        if param_grad:
            gparams = gp if gp.shape[1] == n else gp.view(gp.shape[0], -1, n, inner).sum(dim=(1, 3))
        return gx, gparams, gi if init_grad else None, None, None, None, None


def fused_run(run: NeuronRun, x_seq: Tensor, uniforms: Tensor | None, backend: Backend,
              quant: str, pool: tuple[int, int, int, int] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Run a layer's sequence with ``backend``; ``(outputs, final states)`` like the reference.

    ``pool`` ``(kernel_h, kernel_w, stride_h, stride_w)``: the outputs max-pooled over the last two dimensions of each
    step (no padding), in the same call (a backend that supports ``Meta.pool``).
    """
    flags = run.flags
    steps, step_shape = x_seq.shape[0], x_seq.shape[1:]
    dim = run.dim % len(step_shape)
    n = run.num_neurons
    inner = math.prod(step_shape[dim + 1:])
    m = math.prod(step_shape)
    dtype, device = x_seq.dtype, x_seq.device
    x = x_seq.reshape(steps, m).contiguous()
    zeros_n = torch.zeros(n, dtype=dtype, device=device)
    params = torch.stack([zeros_n if name is None else run.params[name].reshape(-1).expand(n) for name in run.param_slots])
    held = [None if name is None else run.states.get(name) for name in run.state_slots]
    init = None
    if any(value is not None for value in held):
        zeros_m = torch.zeros(m, dtype=dtype, device=device)
        init = torch.stack([zeros_m if value is None else value.reshape(m) for value in held])
    u = None if uniforms is None else uniforms.reshape(steps, uniforms.shape[1], m).contiguous()
    step = float(getattr(run.quant_fn, "step_size", 1.0))
    plane = () if pool is None else (*step_shape[-2:], *pool)
    meta = Meta(flags, quant, step, n, inner, need_x=flags.synaptic or flags.ema or flags.dual, pool=plane)
    save = torch.is_grad_enabled() and (x.requires_grad or params.requires_grad
                                        or (init is not None and init.requires_grad))
    out, final = _FusedSequence.apply(x, params, init, u, meta, backend, save)
    states = {name: final[k].view(step_shape) for k, name in enumerate(run.state_slots) if name is not None}
    if pool is None:
        return out.view(steps, *step_shape), states
    pooled = ((plane[0] - pool[0]) // pool[2] + 1, (plane[1] - pool[1]) // pool[3] + 1)
    return out.view(steps, *step_shape[:-2], *pooled), states
