"""What a neuron layer hands to the kernels: flags, tensors and functions, never the module.

:class:`NeuronRun` carries everything a sequence path needs. The layer builds it
(``NeuronLayer.neuron_run(x_seq)``); the paths (:mod:`~tracetorch.kernels.reference`,
:mod:`~tracetorch.kernels.fused`) read it and return ``(outputs, final states)``, which the
layer writes into its own states. The kernels therefore import nothing from the layer
modules: the slot layout comes from the grammar through ``param_slots`` / ``state_slots``
(:func:`tracetorch.snn.grammar.param_slot_names`), the equations through ``step``
(:func:`tracetorch.snn.step.neuron_step` with the flags bound).

Example:
    >>> import torch, tracetorch as tt
    >>> run = tt.snn.SLIB(4).neuron_run(torch.zeros(3, 2, 4))
    >>> run.flags.name, run.param_slots[0], sorted(run.states)
    ('SLIB', 'alpha', ['mem', 'syn'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["NeuronRun", "Fn", "StepFn"]

Fn = Callable[[Tensor], Tensor]
StepFn = Callable[[Tensor, Mapping[str, "Tensor | None"], Mapping[str, Tensor], Fn, Fn], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass(frozen=True)
class NeuronRun:
    """One neuron layer's sequence problem, without the module.

    Args:
        flags: the layer's :class:`tracetorch.snn.grammar.Flags` (``dual``, ``synaptic``, ``recurrent``,
            ``family``, ``fires``, ``ema``, ``ternary``).
        num_neurons: ``N``, the number of neurons.
        dim: the neuron dimension of one step's input.
        params: activated parameter values by name, shaped to broadcast against one step (rank 0 or along ``dim``).
        states: the held states by name (``None``: zeros).
        param_slots: the parameter name filling each kernel slot (``None``: unused, zeros).
        state_slots: the state name filling each kernel slot (``None``: unused, zeros).
        step: one timestep, ``step(x_t, states, params, spike_fn, quant_fn) -> (out, new_states)``.
        spike_fn: the surrogate spike function (identity for layers that do not fire).
        quant_fn: the output quantizer (identity for layers that do not fire).
        label: the layer, for error messages.
    """

    flags: Any
    num_neurons: int
    dim: int
    params: Mapping[str, Tensor]
    states: Mapping[str, Tensor | None]
    param_slots: tuple[str | None, ...]
    state_slots: tuple[str | None, ...]
    step: StepFn
    spike_fn: Fn
    quant_fn: Fn
    label: str
