"""Gradients: every learnable parameter of every layer learns; gradcheck per family."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import tracetorch as tt

NAMES = tt.snn.layer_names()


def _nonzero_kwargs(layer_cls, n: int, rank: int) -> dict:
    """Non-default values so that no parameter sits where its gradient vanishes
    (rec_weight 0 would cut the gradient of gamma)."""
    kwargs = {}
    probe = layer_cls(n)
    for param in probe.param_names():
        kwargs[f"{param}_rank"] = rank
        if param.endswith("rec_weight"):
            kwargs[param] = 0.7 if not param.startswith("neg_") else -0.6
        if param == "bias":
            kwargs[param] = 0.2
        if param.endswith("scale"):
            kwargs[param] = 1.3 if param.startswith("pos_") else 0.8
        if param.endswith("threshold"):
            kwargs[param] = 0.6
    return kwargs


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("name", NAMES)
def test_every_learnable_parameter_gets_a_gradient(name, rank):
    cls = tt.snn.get_layer_class(name)
    n = 4
    kwargs = _nonzero_kwargs(cls, n, rank)
    if name.startswith("DR") or name.startswith("DSR"):
        # The negative recurrent branch only ever sees neg(prev_output); with the default
        # sigmoid spike_fn LIB's output is never negative, so give it a signed spike_fn.
        kwargs["spike_fn"] = torch.tanh
    layer = cls(n, **kwargs)
    gen = torch.Generator().manual_seed(0)
    loss = torch.zeros(())
    for _ in range(8):
        out = layer(torch.randn(6, n, generator=gen) * 2)
        loss = loss + (out * torch.randn(out.shape, generator=gen)).sum()
    loss.backward()
    names = dict(layer.named_parameters())
    assert set(names) == {f"raw_{p}" for p in layer.param_names()}
    for key, param in names.items():
        assert param.grad is not None, f"{name}.{key} got no gradient"
        assert param.grad.shape == param.shape
        assert torch.isfinite(param.grad).all(), f"{name}.{key}: non-finite gradient"
        assert (param.grad != 0).all(), f"{name}.{key}: zero gradient {param.grad}"


@pytest.mark.parametrize("name", ["LIB", "SLI"])
def test_learn_false_parameters_are_buffers_without_gradient(name):
    layer = tt.snn.get_layer_class(name)(3, learn_beta=False, beta=0.8)
    assert "raw_beta" in dict(layer.named_buffers())
    assert "raw_beta" not in dict(layer.named_parameters())
    out = layer(torch.randn(2, 3, requires_grad=True))
    out.sum().backward()
    assert not layer.raw_beta.requires_grad and layer.raw_beta.grad is None
    torch.testing.assert_close(layer.beta, torch.full((3,), 0.8))


GRADCHECK_NAMES = ["LI", "LIEMA", "LIB", "LIT", "LITS", "DLI", "DSLIEMA", "SRLIB", "DRLIT", "DSRLITS"]


@pytest.mark.parametrize("name", GRADCHECK_NAMES)
def test_gradcheck_wrt_input_and_raw_parameters(name):
    """Finite differences agree with autograd over 4 steps (default smooth spike_fn)."""
    cls = tt.snn.get_layer_class(name)
    n = 3
    kwargs = _nonzero_kwargs(cls, n, 1)
    layer = cls(n, **kwargs).double()
    keys = [k for k, _ in layer.named_parameters()]
    gen = torch.Generator().manual_seed(1)
    raws = [
        (p.detach() + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64)).requires_grad_()
        for _, p in layer.named_parameters()
    ]
    xs = (torch.randn(4, 2, n, generator=gen, dtype=torch.float64) * 1.5).requires_grad_()

    def run(xs, *raw):
        layer.zero_states()
        overrides = dict(zip(keys, raw))
        return torch.stack([functional_call(layer, overrides, (x,)) for x in xs.unbind(0)])

    assert torch.autograd.gradcheck(run, (xs, *raws), eps=1e-6, atol=1e-6, rtol=1e-5)
