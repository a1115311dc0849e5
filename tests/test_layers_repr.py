"""repr shows name, size, dim and only non-default settings; docstrings carry the equations."""

from __future__ import annotations

import inspect

import pytest
import torch

import tracetorch as tt


@pytest.mark.parametrize(
    ("layer", "text"),
    [
        (lambda: tt.snn.LIB(16), "LIB(16)"),
        (lambda: tt.snn.LIB(16, beta=0.9, dim=-1, beta_rank=1, learn_beta=True, threshold=1), "LIB(16)"),
        (lambda: tt.snn.LIT(8, quant_fn=torch.nn.Identity(), spike_fn=tt.functional.sigmoid4x), "LIT(8)"),
        (lambda: tt.snn.LI(32, dim=-3, beta=0.8), "LI(32, dim=-3, beta=0.8)"),
        (
            lambda: tt.snn.DSRLITS(8, dim=1, pos_beta=0.8, bias_rank=0, learn_pos_scale=False,
                                   quant_fn=tt.functional.round_ste(0.5)),
            "DSRLITS(8, dim=1, pos_beta=0.8, bias_rank=0, learn_pos_scale=False, quant_fn=RoundSTE(step_size=0.5))",
        ),
        (lambda: tt.snn.SLI(3, alpha=torch.tensor([0.1, 0.2, 0.3])), "SLI(3, alpha=tensor[3])"),
        (lambda: tt.snn.RLIT(3, spike_fn=torch.tanh, rec_weight=-0.5), "RLIT(3, spike_fn=tanh, rec_weight=-0.5)"),
    ],
)
def test_repr(layer, text):
    assert repr(layer()) == text


def test_config_omits_defaults():
    assert tt.snn.LIB(4, beta=0.9, threshold=2.0, dim=-1).config == {"threshold": 2.0}
    layer = tt.snn.SLIB(4, **tt.snn.SLIB(4, alpha=0.3, learn_beta=False).config)
    assert layer.config == {"alpha": 0.3, "learn_beta": False}
    torch.testing.assert_close(layer.alpha, torch.full((4,), 0.3))


def test_repr_inside_models():
    net = tt.Sequential(torch.nn.Linear(2, 3), tt.snn.LIB(3, dim=1))
    assert repr(net) == "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n  (1): LIB(3, dim=1)\n)"


def test_docstrings_carry_the_equations():
    doc = tt.snn.DSRLITS.__doc__
    for word in ("pos_syn", "neg_syn", "pos_rec", "neg_rec", "pos_mem", "neg_mem", "pos_scale", "neg_scale",
                 "pos_delta = pos_rec_weight*pos(rec) + pos(u)", "prev_output = out",
                 "s_neg = -quant_fn(spike_fn(-neg_threshold - mem - bias))"):
        assert word in doc, word
    assert "mem = beta*mem + (1-beta)*delta" in tt.snn.LIEMA.__doc__
    assert "pos_mem -= r/2; neg_mem -= r/2" in tt.snn.DLIB.__doc__
    assert "syn = alpha*syn + (1-alpha)*x" in tt.snn.SLI.__doc__
    assert "out = mem" in tt.snn.LI.__doc__ and "threshold" not in tt.snn.LI.__doc__


@pytest.mark.parametrize("name", tt.snn.layer_names())
def test_every_class_documents_its_parameters_and_signature(name):
    cls = tt.snn.get_layer_class(name)
    assert cls.__doc__.startswith(f"{name}: ")
    params = cls(2).param_names()
    for p in params:
        assert f"    {p} = " in cls.__doc__
    sig = inspect.signature(cls)
    for p in params:
        assert {p, f"{p}_rank", f"learn_{p}"} <= set(sig.parameters)


@pytest.mark.parametrize("name", tt.snn.layer_names())
def test_signature_defaults_are_the_real_defaults(name):
    """Passing every keyword at its advertised default builds the default layer."""
    cls = tt.snn.get_layer_class(name)
    sig = inspect.signature(cls)
    kwargs = {k: p.default for k, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    layer = cls(3, **kwargs)
    assert repr(layer) == f"{name}(3)" and layer.config == {}
    x = torch.randn(2, 3)
    torch.testing.assert_close(layer(x), cls(3)(x))
