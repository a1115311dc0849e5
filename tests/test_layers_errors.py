"""Bad names, keywords, values, shapes and inputs: each gets a clear, specific error."""

from __future__ import annotations

import re

import pytest
import torch

import tracetorch as tt

VALID = ", ".join(tt.snn.layer_names())


def test_invalid_name_suggests_closest_and_lists_valid_names():
    with pytest.raises(ValueError) as err:
        tt.snn.get_layer_class("SDLIB")
    msg = str(err.value)
    assert msg.startswith("'SDLIB' is not a valid traceTorch layer name. Did you mean 'DSLIB'")
    assert "Names are [D][S][R] + one of LI, LIEMA, LIB, LIT, LITS (prefixes in that order; no R on LI/LIEMA)." in msg
    assert msg.endswith(f"Valid names: {VALID}.")


@pytest.mark.parametrize("bad", ["RLI", "RLIEMA", "DSRLI", "LIX", "SSLIB", "lib", ""])
def test_invalid_names_rejected(bad):
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(bad))} is not a valid traceTorch layer name\..*"
                       rf"Valid names: {re.escape(VALID)}\.$"):
        tt.snn.parse(bad)


def test_rli_rejected_with_valid_alternative():
    with pytest.raises(ValueError) as err:
        tt.snn.get_layer_class("RLI")
    assert str(err.value) == (
        "'RLI' is not a valid traceTorch layer name. Did you mean 'RLIT' or 'RLIB' or 'LI'? Names are [D][S][R] + one "
        "of LI, LIEMA, LIB, LIT, LITS (prefixes in that order; no R on LI/LIEMA). "
        f"Valid names: {VALID}."
    )


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match=r"^a layer name must be a string, got int$"):
        tt.snn.parse(3)


def test_unknown_keyword_alpha_on_lib():
    with pytest.raises(TypeError) as err:
        tt.snn.LIB(4, alpha=0.3)
    assert str(err.value) == (
        "LIB got an unexpected keyword argument 'alpha'. 'alpha' belongs to the synaptic trace (S prefix): "
        "SLIB has it. LIB's parameters are: beta, threshold, bias (each also as <name>_rank and learn_<name>), "
        "plus num_neurons, dim, spike_fn, quant_fn."
    )


def test_unknown_keyword_variants():
    with pytest.raises(TypeError, match=r"^DLIB got an unexpected keyword argument 'beta'\. The D prefix splits 'beta' "
                       r"into 'pos_beta' and 'neg_beta'\. DLIB's parameters are: pos_beta, neg_beta, threshold, bias"):
        tt.snn.DLIB(4, beta=0.5)
    with pytest.raises(TypeError, match=r"^LI got an unexpected keyword argument 'quant_fn'\. LI does not fire; "
                       r"spike_fn/quant_fn belong to the LIB, LIT and LITS families\."):
        tt.snn.LI(4, quant_fn=tt.functional.round_ste())
    with pytest.raises(TypeError, match=r"^LIB got an unexpected keyword argument 'gamma_rank'\. 'gamma' belongs to "
                       r"the recurrent trace \(R prefix\): RLIB has it\."):
        tt.snn.LIB(4, gamma_rank=0)
    with pytest.raises(TypeError, match=r"^DLIT got an unexpected keyword argument 'threshold'\. DLIT has 'pos_threshold' "
                       r"and 'neg_threshold' \(one per event sign\) instead of 'threshold'\. DLIT's parameters are: "
                       r"pos_beta, neg_beta, pos_threshold, neg_threshold, bias \("):
        tt.snn.DLIT(4, threshold=1.0)
    with pytest.raises(TypeError, match=r"^LITS got an unexpected keyword argument 'scale'\. LITS has 'pos_scale' "
                       r"and 'neg_scale' \(one per event sign\) instead of 'scale'\."):
        tt.snn.LITS(4, scale=1.0)
    with pytest.raises(TypeError, match=r"^DLIB got an unexpected keyword argument 'pos_threshold'\. 'pos_threshold' "
                       r"belongs to the ternary families \(LIT, LITS\): DLIT has it\."):
        tt.snn.DLIB(4, pos_threshold=1.0)
    with pytest.raises(TypeError, match=r"^LIB got an unexpected keyword argument 'pos_beta'\. 'pos_beta' belongs to "
                       r"the dual \(D\) prefix: DLIB has it\."):
        tt.snn.LIB(4, pos_beta=0.5)
    with pytest.raises(TypeError, match=r"^LIB got an unexpected keyword argument 'colour'\. LIB's parameters are"):
        tt.snn.LIB(4, colour=1)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("LIB", {"beta": 1.5}, "LIB.beta: value must be in (0, 1), got 1.5"),
        ("LIB", {"beta": 0.0}, "LIB.beta: value must be in (0, 1), got 0"),
        ("SLI", {"alpha": 1.0}, "SLI.alpha: value must be in (0, 1), got 1"),
        ("DRLIB", {"neg_gamma": -0.1}, "DRLIB.neg_gamma: value must be in (0, 1), got -0.1"),
        ("LIB", {"threshold": -1.0}, "LIB.threshold: value must be > 0, got -1"),
        ("LIT", {"neg_threshold": 0.0}, "LIT.neg_threshold: value must be > 0, got 0"),
        ("LIB", {"beta": torch.tensor([0.5, 0.5, 1.2])}, "LIB.beta: value must be in (0, 1), got 1.2"),
        ("LIB", {"bias": float("nan")}, "LIB.bias: value must be any real number, got nan"),
        ("LIB", {"beta": torch.ones(2, 3) * 0.5}, "LIB.beta: expected a scalar or a tensor of shape (3,), got shape (2, 3)"),
        ("LIB", {"beta": torch.full((4,), 0.5)}, "LIB.beta: expected a scalar or a tensor of shape (3,), got shape (4,)"),
        ("LIB", {"beta_rank": 2}, "LIB.beta: rank must be 0 (one shared scalar) or 1 (one per neuron), got 2"),
        ("LIB", {"threshold_rank": -1}, "LIB.threshold: rank must be 0 (one shared scalar) or 1 (one per neuron), got -1"),
        ("LIB", {"beta_rank": True}, "LIB.beta: rank must be 0 (one shared scalar) or 1 (one per neuron), got True"),
        ("LIB", {"learn_beta": "yes"}, "LIB.beta: learn must be True or False, got 'yes'"),
        ("LIB", {"beta": "0.5"}, "LIB.beta: expected a number or a tensor, got str"),
        ("LIB", {"spike_fn": 3}, "LIB: spike_fn must be callable, got int"),
        ("LIB", {"bias": 100.0}, "LIB.bias: value 100 is too large: its raw value (inverse of arcsinh) overflows torch.float32"),
        ("LIB", {"dim": 1.0}, "LIB: dim must be an int, got 1.0"),
    ],
)
def test_bad_values(name, kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        tt.snn.get_layer_class(name)(3, **kwargs)


@pytest.mark.parametrize("n", [0, -2, 2.5, True])
def test_bad_num_neurons(n):
    with pytest.raises(ValueError, match=f"^LIB: num_neurons must be a positive int, got {re.escape(repr(n))}$"):
        tt.snn.LIB(n)


def test_wrong_input_size_at_dim():
    layer = tt.snn.LIB(4)
    with pytest.raises(ValueError, match=re.escape(
        "LIB(num_neurons=4, dim=-1): input of shape (2, 3) has 3 at dim=-1, expected num_neurons=4"
    )):
        layer(torch.zeros(2, 3))
    conv = tt.snn.LIT(4, dim=-3)
    with pytest.raises(ValueError, match=re.escape(
        "LIT(num_neurons=4, dim=-3): input of shape (2, 5, 4, 4) has 5 at dim=-3, expected num_neurons=4"
    )):
        conv(torch.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError, match=re.escape(
        "LIT(num_neurons=4, dim=-3): input of shape (4, 4) has no dimension -3 (the layer was built with dim=-3)"
    )):
        conv(torch.zeros(4, 4))
    with pytest.raises(TypeError, match=r"^LIB\(num_neurons=4, dim=-1\): expected a torch\.Tensor input, got list$"):
        layer([0.0, 1.0, 2.0, 3.0])


def test_batch_size_change_while_states_held():
    layer = tt.snn.SLIB(4)
    layer(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=re.escape(
        "SLIB(num_neurons=4, dim=-1): input of shape (3, 4) does not match the held state 'syn' of shape (2, 4) "
        "(batch size changed?); call zero_states() between sequences of different shapes"
    )):
        layer(torch.zeros(3, 4))
    layer.zero_states()
    assert layer(torch.zeros(3, 4)).shape == (3, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_input_on_another_device():
    layer = tt.snn.LIB(4)
    layer(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=re.escape(
        "LIB(num_neurons=4, dim=-1): input is on cuda:0 but the state 'mem' is on cpu; "
        "move the input or call zero_states()"
    )):
        layer(torch.zeros(2, 4, device="cuda"))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_inputs_are_cast_to_float(dtype):
    layer = tt.snn.LI(3, beta=0.5)
    x = torch.tensor([[1, 0, 1]]).to(dtype)
    out = layer(x)
    assert out.dtype == torch.get_default_dtype()
    out = layer(x)
    assert out.tolist() == [[1.5, 0.0, 1.5]]
    assert layer.mem.dtype == torch.get_default_dtype()
