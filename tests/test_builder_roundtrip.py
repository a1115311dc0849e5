"""spec -> model -> spec builds an identical model; the registry extends the grammar."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import tracetorch as tt
from tracetorch.builder import SpecError, model_to_spec, registry

CONFIGS = [p for p in sorted((Path(__file__).parents[1] / "configs" / "model").glob("*.yaml")) if "\nlayers:" in p.read_text()]
# chain specs; graph specs (nodes:) are tested in test_builder_graph*.py, file.yaml and nir.yaml name no layers
RICH = {
    "name": "rich",
    "input_shape": [2, 12, 12],
    "layers": [
        {"Conv2d": {"out_channels": 4, "kernel_size": [3, 3], "padding": 1, "bias": False}},
        {"BatchNorm2d": {"momentum": 0.2}},
        {"DSLIB": {"pos_alpha": [0.5, 0.6, 0.7, 0.8], "neg_beta": {"value": 0.8, "rank": 0, "learn": False},
                   "quant_fn": {"name": "round_ste", "step_size": 0.5}}},
        {"AvgPool2d": {"kernel_size": 2}},
        {"AdaptiveAvgPool2d": {"output_size": 3}},
        {"Dropout": {"p": 0.1}},
        {"Flatten": {}},
        {"LayerNorm": {"eps": 1e-3}},
        {"Linear": {"out_features": 6}},
        {"BatchNorm1d": {}},
        {"DSRLITS": {"pos_scale": 2.0, "neg_rec_weight": {"value": 0.3, "rank": 0}, "quant_fn": "stochastic_round_ste"}},
        {"Identity": {}},
        {"Linear": {"out_features": 10}},
        {"LIEMA": {"beta": {"value": 0.95, "learn": False}}},
    ],
}


def _build(spec, seed: int = 0) -> tt.Sequential:
    torch.manual_seed(seed)
    return tt.build_model(spec)


def _assert_identical(a: nn.Module, b: nn.Module) -> None:
    assert repr(a) == repr(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()]


def _with_shape(path: Path) -> dict:
    """A model config (no data shape) with the shape of the data it is for."""
    from test_builder_configs import _shape

    return {**tt.load_spec(path).to_dict(), "input_shape": _shape(path)}


@pytest.mark.parametrize("spec", [RICH, *CONFIGS], ids=["rich", *(p.stem for p in CONFIGS)])
def test_round_trip_builds_an_identical_model(spec) -> None:
    spec = _with_shape(spec) if isinstance(spec, Path) else spec
    model = _build(spec)
    again = model_to_spec(model)
    _assert_identical(_build(again), model)
    assert model_to_spec(_build(again)) == again  # a fixed point
    document = yaml.safe_load(yaml.safe_dump(again.to_dict(), sort_keys=False))
    assert tt.load_spec(document) == again
    model.eval()
    rebuilt = _build(document).eval()
    x = torch.rand(3, 2, *model.input_shape)
    torch.manual_seed(1)
    out = model.run(x)
    torch.manual_seed(1)
    torch.testing.assert_close(rebuilt.run(x), out, rtol=0, atol=0)


def test_round_trip_spec_is_explicit() -> None:
    spec = model_to_spec(_build(RICH)).to_dict()
    assert spec["name"] == "rich" and spec["input_shape"] == [2, 12, 12]
    assert spec["layers"][0] == {"Conv2d": {"in_channels": 2, "out_channels": 4, "kernel_size": [3, 3], "padding": [1, 1],
                                            "bias": False}}
    assert spec["layers"][2] == {"DSLIB": {"num_neurons": 4, "dim": -3, "pos_alpha": [0.5, 0.6, 0.7, 0.8],
                                           "neg_beta": {"value": 0.8, "rank": 0, "learn": False},
                                           "quant_fn": {"name": "round_ste", "step_size": 0.5}}}
    assert spec["layers"][7] == {"LayerNorm": {"normalized_shape": [36], "eps": 1e-3}}
    assert spec["layers"][-1] == {"LIEMA": {"num_neurons": 10, "beta": {"value": 0.95, "learn": False}}}


def test_model_to_spec_of_a_hand_built_model() -> None:
    model = tt.Sequential(nn.Linear(3, 5), tt.snn.SLIB(5, alpha=torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])))
    spec = model_to_spec(model)
    assert spec.to_dict() == {"layers": [{"Linear": {"in_features": 3, "out_features": 5}},
                                         {"SLIB": {"num_neurons": 5, "alpha": pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])}}]}
    torch.manual_seed(0)
    reference = tt.Sequential(nn.Linear(3, 5), tt.snn.SLIB(5, alpha=torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])))
    torch.manual_seed(0)
    _assert_identical(tt.build_model(spec), reference)


def test_model_to_spec_rejects_unregistered_modules_and_functions() -> None:
    with pytest.raises(ValueError, match=r"cannot write GELU to a spec: register it with tt.builder.register"):
        model_to_spec(tt.Sequential(nn.GELU()))
    with pytest.raises(ValueError, match=r"cannot write quant_fn=.* in a spec: register its factory"):
        model_to_spec(tt.Sequential(tt.snn.LIB(2, quant_fn=nn.ReLU())))
    with pytest.raises(TypeError, match=r"model_to_spec expects a tt.Sequential"):
        model_to_spec(nn.Linear(2, 2))


class Scale(nn.Module):
    """A user layer: multiplies by a factor; in_features is inferred like Linear's."""

    def __init__(self, in_features: int, factor: float = 2.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@pytest.fixture
def scale_registered():
    tt.builder.register("Scale")(Scale)
    yield
    tt.builder.unregister("Scale")


def test_registered_layer_builds_infers_and_round_trips(scale_registered) -> None:
    model = tt.build_model({"input_shape": [4], "layers": [{"Scale": {"factor": 3}}, {"LIB": {}}]})
    scale, lib = model.children()
    assert (scale.in_features, scale.factor, lib.num_neurons) == (4, 3, 4)
    assert model_to_spec(model).to_dict()["layers"][0] == {"Scale": {"in_features": 4, "factor": 3}}
    assert "Scale" in tt.builder.registered_names()


def test_registered_layer_arguments_are_checked(scale_registered) -> None:
    with pytest.raises(SpecError) as info:
        tt.build_model({"input_shape": [4], "layers": [{"Scale": {"factr": 3}}, {"Scale": {"factor": "x"}}, {"Scal": {}}]})
    assert [(e.location, e.message) for e in info.value.errors] == [
        ("layers[0].Scale.factr", "Scale has no argument 'factr'; did you mean 'factor'?"),
        ("layers[1].Scale.factor", "factor must be a number, got 'x'"),
        ("layers[2]", "unknown layer 'Scal'; did you mean 'Scale'?"),
    ]


def test_register_refuses_builtins_and_silent_replacement(scale_registered) -> None:
    with pytest.raises(ValueError, match=r"register\('LIB'\): 'LIB' is a built-in layer and cannot be replaced"):
        tt.builder.register("LIB")(Scale)
    with pytest.raises(ValueError, match=r"'Scale' is already registered \(pass override=True to replace it\)"):
        tt.builder.register("Scale")(nn.Identity)
    tt.builder.register("Scale", override=True)(nn.Identity)
    assert registry.lookup("Scale").factory is nn.Identity


def test_entry_points_add_layers(monkeypatch) -> None:
    class FakeEntryPoint:
        name, value = "PluginScale", "plugin:Scale"

        def load(self):
            return Scale

    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint()] if group == "tracetorch.layers" else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        model = tt.build_model({"input_shape": [3], "layers": [{"PluginScale": {"factor": 0.5}}]})
        assert torch.equal(model(torch.ones(1, 3)), torch.full((1, 3), 0.5))
    finally:
        tt.builder.unregister("PluginScale")


def test_broken_entry_point_warns_instead_of_failing(monkeypatch) -> None:
    class Broken:
        name, value = "Broken", "missing.module:Thing"

        def load(self):
            raise ImportError("No module named 'missing'")

    monkeypatch.setattr(registry, "entry_points", lambda group: [Broken()])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    with pytest.warns(UserWarning, match=r"entry point 'Broken' \(missing.module:Thing\) failed to load: No module named"):
        names = tt.builder.registered_names()
    assert "Broken" not in names


def test_register_function_makes_a_quantizer_usable_by_name() -> None:
    class Half(nn.Module):
        def forward(self, x):
            return x / 2

    tt.builder.register_function("quant_fn", "half")(Half)
    try:
        model = tt.build_model({"input_shape": [2], "layers": [{"LIB": {"quant_fn": "half"}}]})
        assert model_to_spec(model).to_dict()["layers"][0] == {"LIB": {"num_neurons": 2, "quant_fn": "half"}}
    finally:
        registry._FUNCTIONS["quant_fn"].pop("half")
