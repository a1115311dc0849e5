"""Broken specs: each problem reported once, with its location, YAML line and a short reason."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import tracetorch as tt
from tracetorch.builder import SpecError, SpecIssue

S4 = "input_shape: [4]\nlayers:\n"
CORPUS: list[tuple[str, str, list[tuple[str, int | None, str]]]] = [
    # unknown layers and the naming grammar
    ("typo", "layers:\n  - Linearr: {in_features: 3, out_features: 3}\n",
     [("layers[0]", 2, "unknown layer 'Linearr'; did you mean 'Linear'?")]),
    ("prefix-order", "layers:\n  - SDLIB: {num_neurons: 3}\n",
     [("layers[0]", 2, "unknown layer 'SDLIB': prefixes go in the order D, S, R; did you mean 'DSLIB'?")]),
    ("prefix-order-3", "layers:\n  - RSDLIT: {num_neurons: 3}\n",
     [("layers[0]", 2, "unknown layer 'RSDLIT': prefixes go in the order D, S, R; did you mean 'DSRLIT'?")]),
    ("recurrent-LI", "layers:\n  - RLI: {num_neurons: 3}\n",
     [("layers[0]", 2, "unknown layer 'RLI': the R (recurrent) prefix exists only on LIB, LIT and LITS; "
                       "LI has no recurrent form (did you mean 'RLIB'?)")]),
    ("case", "layers:\n  - linear: {in_features: 3, out_features: 3}\n",
     [("layers[0]", 2, "unknown layer 'linear': names are case-sensitive; did you mean 'Linear'?")]),
    ("lower-snn", "layers:\n  - lib: {num_neurons: 3}\n",
     [("layers[0]", 2, "unknown layer 'lib': names are case-sensitive; did you mean 'LIB'?")]),
    # parameters on the wrong family / prefix
    ("alpha-on-LIB", S4 + "  - Linear: {out_features: 3}\n  - LIB:\n      beta: 0.9\n      alpha: 0.5\n",
     [("layers[1].LIB.alpha", 6, "LIB has no synaptic trace; SLIB has alpha")]),
    ("gamma-on-SLIB", S4 + "  - SLIB: {gamma: 0.5}\n",
     [("layers[0].SLIB.gamma", 3, "SLIB has no recurrent trace; SRLIB has gamma")]),
    ("gamma-on-LI", S4 + "  - LI: {gamma: 0.5}\n",
     [("layers[0].LI.gamma", 3, "LI has no recurrent trace (R exists only on LIB, LIT, LITS)")]),
    ("beta-on-dual", S4 + "  - DLIB: {beta: 0.5}\n", [("layers[0].DLIB.beta", 3, "DLIB splits beta into pos_beta and neg_beta")]),
    ("pos-beta-on-single", S4 + "  - LIB: {pos_beta: 0.5}\n",
     [("layers[0].LIB.pos_beta", 3, "LIB has no dual (pos/neg) split; DLIB has pos_beta")]),
    ("threshold-on-LIT", S4 + "  - LIT: {threshold: 1.0}\n",
     [("layers[0].LIT.threshold", 3, "LIT splits threshold into pos_threshold and neg_threshold")]),
    ("scale-on-LIT", S4 + "  - LIT: {pos_scale: 1.0}\n", [("layers[0].LIT.pos_scale", 3, "LIT has no pos_scale; LITS has it")]),
    ("threshold-on-LI", S4 + "  - LI: {threshold: 1.0}\n",
     [("layers[0].LI.threshold", 3, "LI does not fire (no threshold); LIB has threshold")]),
    ("quant-on-LI", S4 + "  - LI: {quant_fn: round_ste}\n",
     [("layers[0].LI.quant_fn", 3, "LI does not fire; quant_fn belongs to the LIB, LIT and LITS families")]),
    ("python-keyword", S4 + "  - LIB: {beta_rank: 0}\n",
     [("layers[0].LIB.beta_rank", 3, "write beta: {value: ..., rank: ...} (beta_rank is the Python keyword)")]),
    # parameter values
    ("bad-rank", S4 + "  - LIB: {beta: {value: 0.5, rank: 2}}\n",
     [("layers[0].LIB.beta", 3, "rank must be 0 (one shared value) or 1 (one value per neuron), got 2")]),
    ("list-with-rank-0", "input_shape: [2]\nlayers:\n  - LIB: {beta: {value: [0.5, 0.5], rank: 0}}\n",
     [("layers[0].LIB.beta", 3, "beta is a list (one value per neuron) but rank is 0; rank 0 takes a single number")]),
    ("list-length", S4 + "  - LIB: {beta: [0.5, 0.5]}\n",
     [("layers[0].LIB.beta", 3, "beta lists 2 values but LIB has num_neurons=4 (one value per neuron)")]),
    ("decay-range", S4 + "  - LIB: {beta: 1.5}\n", [("layers[0].LIB.beta", 3, "beta must be in (0, 1), got 1.5")]),
    ("decay-in-list", S4 + "  - SLIB: {alpha: [0.5, 0.2, 0.0, 0.1]}\n",
     [("layers[0].SLIB.alpha", 3, "alpha must be in (0, 1), got 0")]),
    ("threshold-range", S4 + "  - LIB: {threshold: -1}\n", [("layers[0].LIB.threshold", 3, "threshold must be > 0, got -1")]),
    ("learn-type", S4 + "  - LIB: {beta: {value: 0.5, learn: maybe}}\n",
     [("layers[0].LIB.beta", 3, "learn must be true or false, got 'maybe'")]),
    ("missing-value", S4 + "  - LIB: {beta: {rank: 0}}\n",
     [("layers[0].LIB.beta", 3, "beta needs a value: {value: 0.9, rank: 0, learn: false}")]),
    ("param-key", S4 + "  - LIB: {beta: {value: 0.5, learnable: true}}\n",
     [("layers[0].LIB.beta", 3, "unknown key 'learnable' in beta; a parameter takes value, rank and learn")]),
    ("param-string", S4 + "  - LIB: {beta: high}\n",
     [("layers[0].LIB.beta", 3, "beta must be a number, a list of numbers or {value, rank, learn}, got 'high'")]),
    ("quant-name", S4 + "  - LIB: {quant_fn: round_st}\n",
     [("layers[0].LIB.quant_fn", 3, "unknown quant_fn 'round_st'; did you mean 'round_ste' or 'stochastic_round_ste'?")]),
    ("quant-arg", S4 + "  - LIB: {quant_fn: {name: round_ste, step: 2}}\n",
     [("layers[0].LIB.quant_fn", 3, "round_ste: got an unexpected keyword argument 'step'")]),
    ("quant-value", S4 + "  - LIB: {quant_fn: {name: round_ste, step_size: -2}}\n",
     [("layers[0].LIB.quant_fn", 3, "round_ste: step_size must be a positive number, got -2")]),
    # shapes
    ("in-features", S4 + "  - Linear: {in_features: 5, out_features: 3}\n",
     [("layers[0].Linear.in_features", 3, "Linear in_features is 5 but its input has 4 features (input shape [4])")]),
    ("num-neurons-after-conv",
     "input_shape: [1, 8, 8]\nlayers:\n  - Conv2d: {out_channels: 3, kernel_size: 3}\n  - LIB: {num_neurons: 5}\n",
     [("layers[1].LIB.num_neurons", 4, "LIB num_neurons is 5 but its input has 3 at dim -3 (input shape [3, 6, 6])")]),
    ("in-channels", "input_shape: [1, 8, 8]\nlayers:\n  - Conv2d: {in_channels: 3, out_channels: 3, kernel_size: 3}\n",
     [("layers[0].Conv2d.in_channels", 3, "Conv2d in_channels is 3 but its input has 1 channels (input shape [1, 8, 8])")]),
    ("dim-out-of-range", S4 + "  - LIB: {dim: -3}\n",
     [("layers[0].LIB.dim", 3, "LIB: input shape [4] (batch excluded) has no dim -3; valid dims are 1..1 and -1..-1")]),
    ("pool-too-big", "input_shape: [1, 2, 2]\nlayers:\n  - MaxPool2d: {kernel_size: 4}\n",
     [("layers[0].MaxPool2d", 3, "MaxPool2d cannot take an input of shape [1, 2, 2]: Given input size: (1x2x2). "
                                 "Calculated output size: (1x0x0). Output size is too small")]),
    ("layernorm", S4 + "  - LayerNorm: {normalized_shape: 5}\n",
     [("layers[0].LayerNorm.normalized_shape", 3, "LayerNorm normalized_shape is [5] but its input shape is [4]")]),
    ("no-input-shape", "layers:\n  - Linear: {out_features: 3}\n",
     [("layers[0].Linear.in_features", 2, "Linear needs in_features: give it, or give the model an input_shape to infer it")]),
    # YAML and document structure
    ("yaml-syntax", "layers:\n  - LIB: {beta: 0.5\n  - LI: {}\n",
     [("<spec>", 3, "YAML syntax error (column 7): while parsing a flow mapping: expected ',' or '}', but got ':'")]),
    ("yaml-tab", "layers:\n\t- LI: {}\n",
     [("<spec>", 2, "YAML syntax error (column 1): while scanning for the next token: found character '\\t' that "
                   "cannot start any token")]),
    ("duplicate-key", S4 + "  - LIB: {beta: 0.5, beta: 0.6}\n",
     [("layers[0].LIB.beta", 3, "duplicate key 'beta' (YAML keeps only the last one)")]),
    ("top-level-key", "input_shap: [4]\nlayers:\n  - LI: {}\n",
     [("input_shap", 1, "unknown key 'input_shap'; did you mean 'input_shape'?")]),
    ("no-layers", "input_shape: [4]\n", [("layers", 1, "the spec has no 'layers' list")]),
    ("empty-layers", "layers: []\n", [("layers", 1, "layers must list at least one layer")]),
    ("not-a-mapping", "- LI: {}\n", [("<spec>", 1, "a spec must be a mapping with 'layers', got [{'LI': {}}]")]),
    ("bad-indent", S4 + "  - Linear:\n    out_features: 3\n",
     [("layers[0]", 3, "a layer entry has one key (the layer name), got 'Linear', 'out_features'; "
                       "indent the arguments under 'Linear'")]),
    ("non-string-name", S4 + "  - 1: {}\n", [("layers[0]", 3, "a layer name must be a string, got 1")]),
    ("bare-name", S4 + "  - Flatten\n",
     [("layers[0]", 3, "write 'Flatten: {}': a layer is a one-key mapping {LayerName: {arguments}}")]),
    ("args-not-mapping", S4 + "  - Linear: 10\n",
     [("layers[0].Linear", 3, "the arguments of Linear must be a mapping {argument: value}, got 10")]),
    # types of torch arguments
    ("int-type", S4 + "  - Linear: {out_features: abc}\n",
     [("layers[0].Linear.out_features", 3, "out_features must be an integer, got 'abc'")]),
    ("bool-is-not-int", S4 + "  - Linear: {out_features: true}\n",
     [("layers[0].Linear.out_features", 3, "out_features must be an integer, got true")]),
    ("union-type", "input_shape: [1, 8, 8]\nlayers:\n  - Conv2d: {out_channels: 3, kernel_size: abc}\n",
     [("layers[0].Conv2d.kernel_size", 3, "kernel_size must be an integer or a list of integers, got 'abc'")]),
    ("float-type", S4 + "  - Dropout: {p: half}\n", [("layers[0].Dropout.p", 3, "p must be a number, got 'half'")]),
    ("missing-required", S4 + "  - Linear: {}\n", [("layers[0].Linear.out_features", 3, "Linear needs out_features")]),
    ("unknown-torch-arg", S4 + "  - Linear: {out_feature: 3}\n",
     [("layers[0].Linear.out_features", 3, "Linear needs out_features"),
      ("layers[0].Linear.out_feature", 3,
       "Linear has no argument 'out_feature'; did you mean 'out_features' or 'in_features'?")]),
    ("input-shape-size", "input_shape: [0, 4]\nlayers:\n  - LI: {}\n", [("input_shape[0]", 1, "sizes must be > 0, got 0")]),
    ("constructor-error", S4 + "  - Dropout: {p: 2}\n",
     [("layers[0].Dropout", 3, "Dropout: dropout probability has to be between 0 and 1, but got 2")]),
    # several problems at once, in document order
    ("many", S4 + "  - Linear: {in_features: 5, out_features: 3}\n  - LIB: {alpha: 0.3}\n  - Foo: {}\n  - LI: {beta: 2}\n",
     [("layers[0].Linear.in_features", 3, "Linear in_features is 5 but its input has 4 features (input shape [4])"),
      ("layers[1].LIB.alpha", 4, "LIB has no synaptic trace; SLIB has alpha"),
      ("layers[2]", 5, "unknown layer 'Foo'; layers are Linear, Conv1d, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
                       "Flatten, Dropout, BatchNorm1d, BatchNorm2d, LayerNorm, Identity and the 32 SNN names "
                       "([D][S][R] + LI / LIEMA / LIB / LIT / LITS)"),
      ("layers[3].LI.beta", 6, "beta must be in (0, 1), got 2")]),
]


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_broken_spec_reports_location_line_and_reason(tmp_path: Path, text: str, expected: list) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        tt.build_model(path)
    assert [(e.location, e.line, e.message) for e in info.value.errors] == expected
    assert info.value.source == str(path)


def test_str_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(S4 + "  - LIB: {alpha: 0.3}\n  - LI: {beta: 2}\n")
    with pytest.raises(SpecError, match=r"2 problems in .*net\.yaml:\n  layers\[0\]\.LIB\.alpha \(line 3\): LIB has no "
                                        r"synaptic trace; SLIB has alpha\n  layers\[1\]\.LI\.beta \(line 4\): beta must be in "
                                        r"\(0, 1\), got 2$"):
        tt.build_model(path)


def test_dict_specs_have_locations_without_lines() -> None:
    with pytest.raises(SpecError) as info:
        tt.build_model({"input_shape": [4], "layers": [{"LIB": {"alpha": 0.3}}]})
    assert info.value.errors == [SpecIssue("layers[0].LIB.alpha", None, "LIB has no synaptic trace; SLIB has alpha")]
    assert str(info.value) == "1 problem:\n  layers[0].LIB.alpha: LIB has no synaptic trace; SLIB has alpha"


def test_spec_error_is_a_value_error_and_pickles() -> None:
    err = SpecError([SpecIssue("layers[0]", 2, "unknown layer 'X'")], "a.yaml")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert back.errors == err.errors and str(back) == str(err)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"cannot read the file: No such file or directory"):
        tt.build_model(tmp_path / "absent.yaml")


def test_load_spec_validates_without_building(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(S4 + "  - Linear: {in_features: 5, out_features: 3}\n")
    spec = tt.load_spec(path)  # shapes are the build's business
    assert spec.entries() == [("Linear", {"in_features": 5, "out_features": 3})]
    path.write_text(S4 + "  - LIB: {alpha: 0.3}\n")
    with pytest.raises(SpecError, match=r"layers\[0\]\.LIB\.alpha \(line 3\): LIB has no synaptic trace; SLIB has alpha"):
        tt.load_spec(path)


def test_null_argument_mapping_means_no_arguments(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(S4 + "  - Flatten:\n  - LI:\n")
    assert [type(m).__name__ for m in tt.build_model(path).children()] == ["Flatten", "LI"]


def test_null_arguments_mean_the_default() -> None:
    model = tt.build_model({"input_shape": [4], "layers": [{"LIB": {"beta": None, "quant_fn": None}},
                                                            {"Linear": {"in_features": None, "out_features": 2}}]})
    lib, linear = model.children()
    assert lib.config == {} and linear.in_features == 4
