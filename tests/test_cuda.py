"""CUDA: same numbers as on the CPU, states live on the layer's device (skipped without a GPU)."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import tracetorch as tt

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", ["LI", "DSLIEMA", "SRLIB", "DRLIT", "DSRLITS"])
def test_cuda_equals_cpu(name):
    torch.manual_seed(0)
    cpu = tt.snn.get_layer_class(name)(6, dim=-3).double()
    with torch.no_grad():
        for p in cpu.parameters():
            p.add_(torch.randn(p.shape, dtype=torch.float64) * 0.3)
    gpu = copy.deepcopy(cpu).cuda()
    xs = torch.randn(12, 2, 6, 3, 3, dtype=torch.float64) * 2
    with torch.no_grad():
        want = cpu.run(xs)
        got = gpu.run(xs.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)
    for (key, a), (_, b) in zip(cpu.states(), gpu.states()):
        assert b.device.type == "cuda" and b.dtype == torch.float64, key
        torch.testing.assert_close(b.cpu(), a, rtol=1e-10, atol=1e-10)


def test_states_follow_the_model_between_devices(tmp_path):
    model = tt.Sequential(nn.Linear(3, 4), tt.snn.DSRLIT(4, pos_rec_weight=0.3))
    model(torch.randn(2, 3))
    model.cuda()
    assert all(v.device.type == "cuda" for v in model.save_states().values())
    out = model(torch.randn(2, 3, device="cuda"))
    assert out.device.type == "cuda"
    path = tmp_path / "s.safetensors"
    model.save_states_file(path)
    other = copy.deepcopy(model).cpu()
    other.zero_states()
    other.load_states_file(path)
    assert all(v.device.type == "cpu" for v in other.save_states().values())
    model.zero_states()
    model.load_states_file(path)
    assert all(v.device.type == "cuda" for v in model.save_states().values())
    model.cpu()
    assert all(v.device.type == "cpu" for v in model.save_states().values())


def test_input_on_another_device_is_refused():
    layer = tt.snn.LIB(4).cuda()
    layer(torch.zeros(2, 4, device="cuda"))
    with pytest.raises(ValueError, match=re.escape(
        "LIB(num_neurons=4, dim=-1): input is on cpu but the state 'mem' is on cuda:0; move the input or call zero_states()"
    )):
        layer(torch.zeros(2, 4))


def test_compile_on_cpu_move_to_cuda_decompile():
    torch.manual_seed(0)
    layer = tt.snn.SLITS(4)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape))
    before = {k: v.detach().clone() for k, v in layer.named_parameters()}
    layer.TTcompile().cuda().TTuncompile()
    for key, value in before.items():
        got = getattr(layer, key)
        assert isinstance(got, nn.Parameter) and got.device.type == "cuda"
        assert torch.equal(got.cpu(), value), key
