"""A user-written layer on tt.Layer gets the whole Model machinery."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt


class Adaptive(tt.Layer):
    """Leaky integrator with an adaptive threshold: ``mem = decay*mem + x; th = a*th + out``."""

    def __init__(self, num_neurons: int, decay: float = 0.8, adapt: float = 0.5, gain: float = 1.0, dim: int = -1):
        super().__init__(num_neurons, dim)
        self.register_param("decay", decay, rank=1, learn=True, constraint="sigmoid")
        self.register_param("adapt", adapt, rank=0, learn=False, constraint="sigmoid")
        self.register_param("gain", gain, rank=1, learn=True, constraint="softplus")
        self.register_state("mem")
        self.register_state("th")

    def forward(self, x):
        x = self.check_input(x)
        decay, adapt, gain = (self.param_view(n, x) for n in ("decay", "adapt", "gain"))
        self.mem = decay * self.zeros_if_none(self.mem, x) + x
        out = torch.tanh(gain * self.mem - self.zeros_if_none(self.th, x))
        self.th = adapt * self.zeros_if_none(self.th, x) + out
        return out


def reference(xs, decay, adapt, gain):
    mem = torch.zeros_like(xs[0])
    th = torch.zeros_like(xs[0])
    outs = []
    for x in xs:
        mem = decay * mem + x
        out = torch.tanh(gain * mem - th)
        th = adapt * th + out
        outs.append(out)
    return torch.stack(outs)


class Net(tt.Model):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.ad = Adaptive(3, dim=-3)
        self.more = {"a": Adaptive(3, decay=0.6, dim=1)}

    def forward(self, x):
        return self.more["a"](self.ad(self.conv(x)))


def test_registration_and_values():
    layer = Adaptive(4, decay=0.7)
    assert layer.param_names() == ["decay", "adapt", "gain"]
    assert layer.state_names() == ["mem", "th"]
    assert isinstance(layer.raw_decay, nn.Parameter) and layer.raw_decay.shape == (4,)
    assert "raw_adapt" in dict(layer.named_buffers()) and layer.raw_adapt.shape == ()
    torch.testing.assert_close(layer.raw_decay, torch.logit(torch.full((4,), 0.7)))
    torch.testing.assert_close(layer.decay, torch.full((4,), 0.7))
    torch.testing.assert_close(layer.raw_gain, torch.log(torch.expm1(torch.ones(4))))
    with pytest.raises(ValueError, match=r"^Adaptive\.gain: value must be > 0, got -1$"):
        Adaptive(4, gain=-1.0)
    with pytest.raises(ValueError, match=r"^Adaptive\.decay: value must be in \(0, 1\), got 2$"):
        Adaptive(4, decay=2.0)


@pytest.mark.parametrize(("dim", "shape"), [(-1, (2, 3)), (-3, (2, 3, 2, 2)), (1, (2, 3, 4))])
def test_matches_reference_along_dim(dim, shape):
    gen = torch.Generator().manual_seed(0)
    decay = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    f64 = dict(dtype=torch.float64)
    layer = Adaptive(3, decay=decay, adapt=torch.tensor(0.3, **f64), gain=torch.full((3,), 2.0, **f64), dim=dim)
    xs = torch.randn(8, *shape, generator=gen, dtype=torch.float64)
    view = [1] * len(shape)
    view[dim % len(shape)] = 3
    want = reference(xs, decay.reshape(view), torch.tensor(0.3, dtype=torch.float64), 2.0)
    torch.testing.assert_close(layer.run(xs), want, rtol=1e-12, atol=1e-12)


def test_model_machinery_on_custom_layers(tmp_path):
    torch.manual_seed(0)
    net = Net()
    assert set(net.layers()) == {"ad", "more.a"}
    xs = torch.randn(8, 2, 2, 4, 4)
    with torch.no_grad():
        for x in xs[:4]:
            net(x)
    assert set(net.save_states()) == {"ad.mem", "ad.th", "more.a.mem", "more.a.th"}
    for suffix in (".pt", ".safetensors"):
        path = tmp_path / f"s{suffix}"
        net.save_states_file(path)
        snapshot = net.save_states()
        with torch.no_grad():
            want = [net(x) for x in xs[4:]]
        net.zero_states()
        assert net.ad.mem is None and net.more["a"].th is None
        net.load_states_file(path)
        assert all(torch.equal(net.save_states()[k], v) for k, v in snapshot.items())
        with torch.no_grad():
            got = [net(x) for x in xs[4:]]
        assert all(torch.equal(g, w) for g, w in zip(got, want))
        net.load_states(snapshot)
    # detach keeps values, cuts graphs
    out = net(xs[0])
    assert out.requires_grad and net.ad.mem.requires_grad
    net.detach_states()
    assert not net.ad.mem.requires_grad and not net.more["a"].th.requires_grad
    # TTcompile / TTuncompile
    raw_before = {k: v.clone() for k, v in net.ad.named_parameters()}
    net.zero_states()
    with torch.no_grad():
        want = net.run(xs)
        net.zero_states()
        net.TTcompile()
        assert torch.equal(net.ad.raw_decay, net.ad.decay) and not isinstance(net.ad.raw_decay, nn.Parameter)
        assert torch.equal(net.run(xs), want)
    net.TTuncompile()
    assert {k: v for k, v in net.ad.named_parameters()}.keys() == raw_before.keys()
    assert all(torch.equal(getattr(net.ad, k), v) for k, v in raw_before.items())
    assert isinstance(net.ad.raw_decay, nn.Parameter) and "raw_adapt" in dict(net.ad.named_buffers())


def test_custom_layer_errors_use_its_own_name():
    layer = Adaptive(3)
    with pytest.raises(ValueError, match=r"^Adaptive\(num_neurons=3, dim=-1\): input of shape \(2, 4\) has 4 at dim=-1, "
                       r"expected num_neurons=3$"):
        layer(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"^Adaptive\.w: rank must be 0 \(one shared scalar\) or 1 \(one per neuron\), "
                       r"got 3$"):
        layer.register_param("w", 1.0, rank=3)
    with pytest.raises(KeyError):
        layer.register_param("w", 1.0, constraint="cubic")
