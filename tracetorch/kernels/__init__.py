"""Whole-sequence execution of neuron layers: ``layer.run(x_seq)`` over ``[T, *input_shape]``.

* :mod:`~tracetorch.kernels.reference`: the plain-PyTorch path (a loop of
  :func:`tracetorch.snn.step.neuron_step`): the exact reference and the fallback; also how
  stochastic quantizers draw their randomness in sequence mode (all uniforms up front).
* :mod:`~tracetorch.kernels.fused`: the flat layout and the ``torch.autograd.Function``
  shared by the fused kernels (forward saves only the traces and the membrane before the
  reset per step; backward walks time in reverse).
* :mod:`~tracetorch.kernels.cpu`: ``neuron_kernels.h``, one C++ template for all 32 layers,
  built on first use; :mod:`~tracetorch.kernels.triton_kernels`: the same for CUDA.
* :mod:`~tracetorch.kernels.neuron_run`: what a layer hands over (flags, tensors, functions; never
  the module); :mod:`~tracetorch.kernels.dispatch`: picks the path (``explain`` says which and why)
  and returns the outputs and final states, which the layer writes itself.
* :mod:`~tracetorch.kernels.sequence`: runs any module over ``[T, ...]`` (``tt.Sequential.run``):
  folds time into the batch for stateless modules and decides when a ``Linear`` runs event-driven.
* :mod:`~tracetorch.kernels.event_linear`: ``nn.Linear`` on 0/1 inputs with work proportional
  to the spikes (``events_cpu.cpp``); :mod:`~tracetorch.kernels.spike_draws`: counter-based
  Bernoulli spike trains (rate coding). Large outputs of the C++ kernels come from a pool of
  reused buffers (``tensor_pool.h``, ``TRACETORCH_CPU_POOL_MB``).

Sequence mode equals T single steps: same outputs, final states and gradients (to float
tolerance), for every layer, ``dim``, parameter rank and quantizer; the final states stay
connected to the autograd graph, and the initial (held) states receive gradients.

Example:
    >>> import torch, tracetorch as tt
    >>> layer = tt.snn.SLIB(4)
    >>> layer.run(torch.rand(25, 8, 4)).shape
    torch.Size([25, 8, 4])
    >>> layer.mem.shape
    torch.Size([8, 4])
"""
