"""Random spec-shaped documents either build or raise SpecError: never another exception."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracetorch as tt
from tracetorch.builder import SpecError, registered_names
from tracetorch.snn.grammar import layer_names, param_specs, parse

NAMES = [*registered_names(), "SDLIB", "RLI", "linear", "Foo", "LIBB", ""]
SNN_KEYS = sorted({s.name for n in layer_names() for s in param_specs(parse(n))})
TORCH_KEYS = ["in_features", "out_features", "in_channels", "out_channels", "kernel_size", "stride", "padding", "bias",
              "p", "start_dim", "end_dim", "output_size", "normalized_shape", "eps", "momentum", "num_features", "groups"]
KEYS = [*SNN_KEYS, *TORCH_KEYS, "num_neurons", "dim", "spike_fn", "quant_fn", "rank", "learn", "value", "name", "beta_rank"]

small_ints = st.integers(min_value=-3, max_value=12)
numbers = st.one_of(small_ints, st.floats(min_value=-2, max_value=2), st.sampled_from([float("nan"), float("inf"), 0.5, 1e-9]))
leaves = st.one_of(st.none(), st.booleans(), numbers, st.sampled_from(["round_ste", "sigmoid4x", "same", "x", ""]))
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["value", "rank", "learn", "name", "step_size", "extra"]), inner, max_size=3),
    ),
    max_leaves=6,
)
arguments = st.one_of(st.none(), st.dictionaries(st.sampled_from(KEYS), values, max_size=4), values)
layer = st.one_of(st.dictionaries(st.sampled_from(NAMES), arguments, min_size=1, max_size=1), values)
documents = st.fixed_dictionaries(
    {"layers": st.one_of(st.lists(layer, max_size=5), values)},
    optional={
        "input_shape": st.one_of(st.lists(st.integers(min_value=-1, max_value=9), min_size=0, max_size=4), values),
        "name": st.one_of(st.text(max_size=5), values),
        "extra": values,
    },
)


@st.composite
def _snn_entry(draw):
    name = draw(st.sampled_from(layer_names()))
    args = {}
    for spec in param_specs(parse(name)):
        if draw(st.booleans()):
            low, high = {"sigmoid": (0.01, 0.99), "softplus": (0.1, 3.0)}.get(spec.constraint, (-2.0, 2.0))
            value = draw(st.floats(min_value=low, max_value=high))
            args[spec.name] = draw(st.sampled_from([value, {"value": value, "rank": 0}, {"value": value, "learn": False}]))
    if parse(name).fires and draw(st.booleans()):
        args["quant_fn"] = draw(st.sampled_from(["round_ste", {"name": "stochastic_round_ste", "step_size": 0.5}]))
    return {name: args}


plausible_layer = st.one_of(
    _snn_entry(),
    st.builds(lambda n: {"Linear": {"out_features": n}}, st.integers(1, 8)),
    st.builds(lambda c, k, p: {"Conv2d": {"out_channels": c, "kernel_size": k, "padding": p}},
              st.integers(1, 3), st.integers(1, 3), st.integers(0, 1)),
    st.builds(lambda k: {"MaxPool2d": {"kernel_size": k}}, st.integers(1, 2)),
    st.builds(lambda n: {"AdaptiveAvgPool2d": {"output_size": n}}, st.integers(1, 3)),
    st.builds(lambda p: {"Dropout": {"p": p}}, st.floats(0, 1)),
    st.sampled_from([{"Flatten": {}}, {"Identity": {}}, {"LayerNorm": {}}, {"BatchNorm1d": {}}, {"BatchNorm2d": {}}]),
)


@st.composite
def plausible_documents(draw):
    """Mostly-valid specs, one argument sometimes replaced by random junk."""
    size = st.integers(1, 6)
    shape = draw(st.one_of(st.lists(size, min_size=1, max_size=1), st.lists(size, min_size=3, max_size=3)))
    layers = draw(st.lists(plausible_layer, min_size=1, max_size=5))
    if draw(st.integers(0, 3)) == 0:
        index = draw(st.integers(0, len(layers) - 1))
        (name, args), = layers[index].items()
        layers[index] = {name: {**args, draw(st.sampled_from(KEYS)): draw(values)}}
    return {"input_shape": shape, "layers": layers}


def _build_or_spec_error(document) -> None:
    try:
        model = tt.build_model(document)
    except SpecError as err:
        assert err.errors and all(issue.message for issue in err.errors)
        return
    assert isinstance(model, tt.Sequential)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_build_or_raise_spec_error(document) -> None:
    _build_or_spec_error(document)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible_documents())
def test_plausible_documents_build_or_raise_spec_error(document) -> None:
    _build_or_spec_error(document)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(documents, plausible_documents()))
def test_random_yaml_files_build_or_raise_spec_error(tmp_path_factory, document) -> None:
    path = tmp_path_factory.mktemp("spec") / "model.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        tt.build_model(path)
    except SpecError as err:
        assert all(issue.line is None or issue.line >= 1 for issue in err.errors)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("layers:-[]{},\t\n #LIB0.9'\"&*!|>")), max_size=60))
def test_random_text_never_escapes_as_another_exception(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("text") / "model.yaml"
    path.write_text(text)
    with pytest.raises(SpecError):
        tt.build_model(path)
