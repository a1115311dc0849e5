"""TTcompile() stores activated values as buffers; TTuncompile() restores the raw ones exactly; compile() is torch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt

NAMES = tt.snn.layer_names()


def _random_layer(name: str, seed: int, **extra):
    gen = torch.Generator().manual_seed(seed)
    cls = tt.snn.get_layer_class(name)
    layer = cls(4, **extra)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    return layer


def _snapshot(layer):
    return {
        key: (value.detach().clone(), isinstance(value, nn.Parameter), value.requires_grad)
        for key, value in [*layer.named_parameters(), *layer.named_buffers()]
    }


@pytest.mark.parametrize("name", NAMES)
def test_compile_keeps_outputs_and_decompile_restores_raw_parameters(name):
    layer = _random_layer(name, NAMES.index(name))
    before = _snapshot(layer)
    xs = torch.randn(10, 3, 4, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        want = layer.run(xs)
        values = {p: getattr(layer, p).clone() for p in layer.param_names()}
        layer.zero_states()
        layer.TTcompile()
        assert layer.is_compiled
        assert list(layer.parameters()) == []
        for p, value in values.items():
            assert torch.equal(getattr(layer, f"raw_{p}"), value)  # the activated value is stored
            assert torch.equal(getattr(layer, p), value)
        got = layer.run(xs)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    layer.TTuncompile()
    assert not layer.is_compiled
    after = _snapshot(layer)
    assert list(after) == list(before)
    for key, (value, is_param, requires_grad) in before.items():
        assert torch.equal(after[key][0], value), key
        assert after[key][1:] == (is_param, requires_grad), key


def test_compile_on_learn_false_layer_and_mixed():
    layer = _random_layer("SRLIT", 0, learn_beta=False, learn_alpha=False, rec_weight=0.3)
    before = _snapshot(layer)
    assert not before["raw_beta"][1] and before["raw_gamma"][1]
    x = torch.randn(2, 4)
    want = layer(x)
    layer.zero_states()
    layer.TTcompile()
    torch.testing.assert_close(layer(x), want, rtol=0, atol=0)
    layer.TTuncompile()
    after = _snapshot(layer)
    for key, (value, is_param, requires_grad) in before.items():
        assert torch.equal(after[key][0], value) and after[key][1:] == (is_param, requires_grad), key
    all_frozen = tt.snn.LIB(3, learn_beta=False, learn_threshold=False, learn_bias=False)
    all_frozen.TTcompile()
    assert list(all_frozen.parameters()) == [] and len(list(all_frozen.buffers())) == 3
    all_frozen.TTuncompile()
    assert list(all_frozen.parameters()) == []
    assert torch.equal(all_frozen.beta, torch.full((3,), 0.9))


def test_decompile_keeps_parameters_frozen_with_requires_grad_false():
    layer = _random_layer("DSLIB", 3)
    layer.raw_pos_beta.requires_grad_(False)
    before = _snapshot(layer)
    layer.TTcompile().TTuncompile()
    after = _snapshot(layer)
    for key, (value, is_param, requires_grad) in before.items():
        assert torch.equal(after[key][0], value) and after[key][1:] == (is_param, requires_grad), key


def test_compile_twice_and_decompile_twice_are_no_ops():
    layer = _random_layer("LITS", 2)
    before = _snapshot(layer)
    layer.TTcompile().TTcompile()
    values = {p: getattr(layer, p).clone() for p in layer.param_names()}
    assert all(torch.equal(getattr(layer, f"raw_{p}"), v) for p, v in values.items())
    layer.TTuncompile().TTuncompile()
    after = _snapshot(layer)
    assert all(torch.equal(after[k][0], v[0]) for k, v in before.items())


def test_model_compile_aliases_and_nested_layers():
    class Net(tt.Model):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.lif = tt.snn.DSRLITS(4, pos_rec_weight=0.5)
            self.extra = [tt.snn.LIEMA(4)]

        def forward(self, x):
            return self.extra[0](self.lif(self.fc(x)))

    torch.manual_seed(0)
    net = Net()
    xs = torch.randn(6, 2, 3)
    with torch.no_grad():
        want = net.run(xs)
        before = {**_snapshot(net.lif), **{f"e.{k}": v for k, v in _snapshot(net.extra[0]).items()}}
        net.zero_states()
        assert net.TTcompile() is net
        assert net.lif.is_compiled and net.extra[0].is_compiled
        assert torch.equal(net.run(xs), want)
        assert net.TTdecompile() is net
        assert not net.lif.is_compiled and not net.extra[0].is_compiled
        after = {**_snapshot(net.lif), **{f"e.{k}": v for k, v in _snapshot(net.extra[0]).items()}}
    for key, (value, is_param, requires_grad) in before.items():
        assert torch.equal(after[key][0], value) and after[key][1:] == (is_param, requires_grad), key
    net.TTcompile()
    net.TTuncompile()
    assert not net.lif.is_compiled


def test_decompile_after_changing_the_compiled_value_inverts_it():
    layer = tt.snn.LIB(3, beta=0.5)
    layer.TTcompile()
    with torch.no_grad():
        layer.raw_beta.fill_(0.75)
    layer.TTuncompile()
    assert isinstance(layer.raw_beta, nn.Parameter)
    torch.testing.assert_close(layer.beta, torch.full((3,), 0.75))


def test_compile_after_moving_to_float64_then_decompile():
    layer = _random_layer("SLIT", 4).double()
    before = _snapshot(layer)
    layer.TTcompile().TTuncompile()
    after = _snapshot(layer)
    for key, (value, is_param, requires_grad) in before.items():
        assert after[key][0].dtype == torch.float64 and torch.equal(after[key][0], value), key
        assert after[key][1:] == (is_param, requires_grad), key


def test_compile_then_move_to_float64_then_decompile():
    layer = _random_layer("DRLIB", 5)
    before = _snapshot(layer)
    layer.TTcompile()
    layer.double()
    layer.TTuncompile()
    for key, (value, is_param, requires_grad) in before.items():
        got = getattr(layer, key)
        assert got.dtype == torch.float64 and torch.equal(got, value.double()), key
        assert (isinstance(got, nn.Parameter), got.requires_grad) == (is_param, requires_grad), key


def test_compile_is_torchs_own_and_the_baking_has_its_own_names():
    """``model.compile()`` must reach ``torch.nn.Module.compile`` (torch.compile), never traceTorch's baking."""
    for cls in (tt.Layer, tt.Model, tt.Sequential, tt.snn.LIB):
        assert cls.compile is nn.Module.compile, cls
    for cls in (tt.Layer, tt.Model):
        assert cls.bake_parameters is cls.TTcompile and cls.unbake_parameters is cls.TTuncompile
        assert cls.TTdecompile is cls.TTuncompile and cls.decompile is cls.TTuncompile
    net = tt.Sequential(nn.Linear(3, 4), tt.snn.LIB(4, beta=0.25))
    assert net.bake_parameters() is net and net[1].is_compiled
    torch.testing.assert_close(net[1].raw_beta, torch.full((4,), 0.25))  # the activated value, stored
    assert net.unbake_parameters() is net and not net[1].is_compiled
    torch.testing.assert_close(net[1].beta, torch.full((4,), 0.25))
