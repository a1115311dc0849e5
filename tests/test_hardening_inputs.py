"""Bad runtime inputs through the whole-sequence paths (layer.run, Sequential.run, sequence.run): same rules as one step.

The one-step path is tested in test_layers_errors.py; here every check must hold when a
sequence ``[T, ...]`` is run at once, whatever fused path a layer uses.
"""

from __future__ import annotations

import re

import pytest
import torch

import tracetorch as tt
from tracetorch.kernels.sequence import run as run_sequence

NAMES = ["LIB", "DSRLITS", "SLI", "RLIT"]


def runners(layer):
    """The three ways a sequence reaches a layer."""
    return {
        "layer.run": layer.run,
        "Sequential.run": tt.Sequential(layer).run,
        "sequence.run": lambda x: run_sequence(layer, x),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("how", ["layer.run", "Sequential.run", "sequence.run"])
def test_wrong_size_at_dim_in_sequences(name, how):
    layer = tt.snn.get_layer_class(name)(4)
    label = f"{name}(num_neurons=4, dim=-1)"
    with pytest.raises(ValueError, match=re.escape(f"{label}: input of shape (2, 3) has 3 at dim=-1, expected num_neurons=4")):
        runners(layer)[how](torch.zeros(5, 2, 3))
    conv = tt.snn.get_layer_class(name)(4, dim=-3)
    with pytest.raises(ValueError, match=re.escape(f"{name}(num_neurons=4, dim=-3): input of shape (4, 4) has no dimension -3")):
        runners(conv)[how](torch.zeros(5, 4, 4))


@pytest.mark.parametrize("how", ["layer.run", "Sequential.run", "sequence.run"])
def test_batch_size_change_while_states_held_in_sequences(how):
    layer = tt.snn.SLIB(4)
    runners(layer)[how](torch.rand(3, 2, 4))
    with pytest.raises(ValueError, match=re.escape(
        "SLIB(num_neurons=4, dim=-1): input of shape (5, 4) does not match the held state 'syn' of shape (2, 4) "
        "(batch size changed?); call zero_states() between sequences of different shapes"
    )):
        runners(layer)[how](torch.rand(3, 5, 4))
    layer.zero_states()
    assert runners(layer)[how](torch.rand(3, 5, 4)).shape == (3, 5, 4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_integer_and_bool_sequences_equal_their_float_version(name, dtype):
    torch.manual_seed(0)
    x = (torch.rand(6, 2, 4) > 0.5).to(dtype)
    layer = tt.snn.get_layer_class(name)(4)
    reference = layer.run(x.float())
    for how, run in runners(layer).items():
        layer.zero_states()
        out = run(x)
        assert out.dtype == torch.get_default_dtype(), how
        torch.testing.assert_close(out, reference, rtol=0, atol=0, msg=how)


def test_a_sequence_that_is_not_a_tensor_or_has_no_time_axis():
    layer = tt.snn.LIB(4)
    with pytest.raises(ValueError, match=r"^run\(\) expects a tensor of shape \[T, \.\.\.\], got <class 'list'>$"):
        run_sequence(layer, [[0.0] * 4])
    with pytest.raises(
        ValueError,
        match=re.escape("LIB(num_neurons=4, dim=-1).run: expected a sequence [T, *input_shape] with T >= 1, got shape (4,)"),
    ):
        layer.run(torch.zeros(4))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("how", ["layer.run", "Sequential.run", "sequence.run"])
def test_sequence_on_another_device_than_the_states(how):
    layer = tt.snn.LIB(4)
    runners(layer)[how](torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match=re.escape(
        "LIB(num_neurons=4, dim=-1): input is on cuda:0 but the state 'mem' is on cpu; move the input or call zero_states()"
    )):
        runners(layer)[how](torch.zeros(3, 2, 4, device="cuda"))
