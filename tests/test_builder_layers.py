"""Every SNN layer built from a spec equals the one constructed in Python, for every parameter form."""

from __future__ import annotations

import pytest
import torch

import tracetorch as tt
from tracetorch.snn.grammar import param_specs, parse

N = 3
_BASE = {"sigmoid": 0.6, "softplus": 1.3, "arcsinh": 0.2, "none": 0.4}


def _value(spec, index: int) -> float:
    return round(_BASE[spec.constraint] + 0.05 * index, 4)


def _forms(name: str, form: str) -> tuple[dict, dict]:
    """(spec arguments, Python keyword arguments) giving every parameter in one form."""
    spec_args: dict = {}
    kwargs: dict = {}
    for index, spec in enumerate(param_specs(parse(name))):
        v = _value(spec, index)
        if form == "scalar":
            spec_args[spec.name] = v
            kwargs[spec.name] = v
        elif form == "list":
            values = [round(v + 0.01 * k, 4) for k in range(N)]
            spec_args[spec.name] = values
            kwargs[spec.name] = torch.tensor(values)
        else:
            spec_args[spec.name] = {"value": v, "rank": 0, "learn": False}
            kwargs.update({spec.name: v, f"{spec.name}_rank": 0, f"learn_{spec.name}": False})
    if parse(name).fires and form == "dict":
        spec_args["quant_fn"] = {"name": "round_ste", "step_size": 0.5}
        spec_args["spike_fn"] = "sigmoid4x"
        kwargs["quant_fn"] = tt.functional.round_ste(0.5)
        kwargs["spike_fn"] = tt.functional.sigmoid4x
    return spec_args, kwargs


def _assert_same_layer(built: torch.nn.Module, expected: torch.nn.Module) -> None:
    got_params = dict(built.named_parameters())
    want_params = dict(expected.named_parameters())
    assert got_params.keys() == want_params.keys()
    for key, value in want_params.items():
        torch.testing.assert_close(got_params[key], value, rtol=0, atol=0)
    got_buffers = dict(built.named_buffers())
    want_buffers = dict(expected.named_buffers())
    assert got_buffers.keys() == want_buffers.keys()
    for key, value in want_buffers.items():
        torch.testing.assert_close(got_buffers[key], value, rtol=0, atol=0)
    torch.manual_seed(0)
    x = torch.randn(6, 2, N) * 2
    torch.testing.assert_close(built.run(x), expected.run(x), rtol=0, atol=0)


@pytest.mark.parametrize("form", ["scalar", "list", "dict"])
@pytest.mark.parametrize("name", tt.snn.layer_names())
def test_spec_layer_equals_python_layer(name: str, form: str) -> None:
    spec_args, kwargs = _forms(name, form)
    model = tt.build_model({"input_shape": [N], "layers": [{name: spec_args}]})
    (built,) = model.children()
    expected = tt.snn.get_layer_class(name)(N, **kwargs)
    assert type(built) is type(expected)
    _assert_same_layer(built, expected)
    if form == "dict":
        assert all(not p.requires_grad for p in built.parameters())
        assert all(built.param_info(s.name).rank == 0 for s in param_specs(parse(name)))


def test_explicit_num_neurons_and_dim_without_input_shape() -> None:
    model = tt.build_model({"layers": [{"SLIB": {"num_neurons": 5, "dim": -3, "alpha": 0.7}}]})
    (layer,) = model.children()
    assert (layer.num_neurons, layer.dim) == (5, -3)
    assert layer.alpha.tolist() == pytest.approx([0.7] * 5)
    assert model(torch.rand(2, 5, 4, 4)).shape == (2, 5, 4, 4)


def test_dim_is_inferred_as_the_channel_dimension_after_a_convolution() -> None:
    model = tt.build_model({"input_shape": [2, 8, 8], "layers": [{"Conv2d": {"out_channels": 4, "kernel_size": 3}}, {"LIB": {}}]})
    conv, lib = model.children()
    assert (conv.in_channels, lib.num_neurons, lib.dim) == (2, 4, -3)
    assert model(torch.rand(3, 2, 8, 8)).shape == (3, 4, 6, 6)


def test_conv1d_sequence_layout_infers_dim_minus_two() -> None:
    model = tt.build_model({"input_shape": [3, 10], "layers": [{"Conv1d": {"out_channels": 5, "kernel_size": 3}},
                                                                {"DLI": {}}, {"BatchNorm1d": {}}]})
    _, layer, norm = model.children()
    assert (layer.num_neurons, layer.dim, norm.num_features) == (5, -2, 5)
