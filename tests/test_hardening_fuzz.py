"""Fuzzing the two places a user's text enters: model spec files and tt-train's command-line overrides.

Only the project's own errors may come out (``SpecError``, ``ConfigError``), never another
exception, and nothing may hang (alias bombs and deep nesting are refused quickly).
"""

from __future__ import annotations

import re
import sys
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_builder_property import documents, plausible_documents
from tracetorch.cli import train as train_cli
from tracetorch.cli.config import ConfigError, check_overrides, compose_config

import tracetorch as tt
from tracetorch.builder import SpecError
from tracetorch.training.config import TrainConfig


def many(count: int) -> settings:
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---- model specs ---------------------------------------------------------------------------


def build_or_spec_error(source) -> None:
    try:
        model = tt.build_model(source)
    except SpecError as err:
        assert err.errors and all(issue.message for issue in err.errors)
        return
    assert isinstance(model, tt.Sequential)


@many(2000)
@given(st.one_of(documents, plausible_documents()))
def test_thousands_of_spec_documents_build_or_raise_spec_error(document) -> None:
    build_or_spec_error(document)


YAML_PIECES = ["layers:", "input_shape:", "\n", "  ", "- ", "LIB", "Linear", "out_features", ": ", "{", "}", "[", "]", ",",
               "&a ", "*a", "&b ", "*b", "<<: *a", "!!python/object:os.system ", "!!binary ", "!!str ", "0.9", "-1", "1e999",
               ".nan", "null", "'", '"', "#", "|", ">", "\t", "\u00e9", "\x00", "---", "...", "?"]


@many(1000)
@given(st.lists(st.sampled_from(YAML_PIECES), max_size=40).map("".join))
def test_random_yaml_text_raises_only_spec_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    build_or_spec_error(path)


@pytest.mark.parametrize(("text", "message"), [
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + "layers: [*i]\n",
     "the document expands to more than 100000 values through aliases"),
    ("layers: " + "[" * 3000 + "]" * 3000, "nested too deeply (more than 100 levels)"),
    ("layers: &a [*a]", "an alias refers to a value that contains it"),
])
def test_alias_bombs_and_deep_nesting_are_refused_fast(tmp_path, text, message):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(SpecError, match=re.escape(message)):
        tt.build_model(path)
    assert time.perf_counter() - start < 5


# ---- tt-train overrides ------------------------------------------------------------------------


def _flat_keys() -> list[str]:
    cfg = compose_config([]).to_dict()  # the default config tt-train composes
    keys = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        else:
            keys.append(prefix)

    walk(cfg, "")
    return keys


KEYS = [*_flat_keys(), "model.layers.1.Linear.out_features", "model.layers.9", "model.name", "hydra.run.dir",
        "hydra.job.chdir", "trainer", "data", "x", "trainer.epoch", "optim.betas", "", "a.b.c", "0", "data.root"]
GROUPS = {"data": ["digits", "mnist", "poisson_clicks", "nope"], "model": ["mlp", "conv", "lits", "recurrent", "x"],
          "optim": ["adam", "adamw", "sgd", "rmsprop"], "trainer": ["default", "online", "other"],
          "encoder": ["rate", "latency", "direct", "delta"], "experiment": ["mnist_mlp", "clicks_recurrent", "null", "z"],
          "hydra/sweeper": ["basic", "optuna"]}
VALUES = st.one_of(
    st.integers(-5, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "''", '""', "'a b'", "[1,2]", "[]", "{a: 1}", "{}", "1,2", "range(1,3)",
                     "choice(a,b)", "glob(*)", "interval(0,1)", "${trainer.epochs}", "${nope}", "${oc.env:HOME}",
                     "${oc.env:TT_UNSET_VAR}", "${oc.decode:'[1, 2'}", "${seed}", "${hydra:runtime.output_dir}",
                     "${now:%Y}", "1e999", "-0", "0x1F", "cpu", "cuda:7", "auto", "[0.9, 0.999]", "skip", "stop"]),
    st.text(alphabet=st.sampled_from(list("az09_-.,:=[]{}()$'\"\\ ~+*@#%/")), max_size=12),
)


@st.composite
def override(draw) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=20))
    if kind <= 2:
        group = draw(st.sampled_from(sorted(GROUPS)))
        return f"{draw(st.sampled_from(['', '+', '~']))}{group}={draw(st.sampled_from(GROUPS[group]))}"
    prefix = draw(st.sampled_from(["", "", "", "+", "++", "~"]))
    key = draw(st.sampled_from(KEYS))
    if prefix == "~" and draw(st.booleans()):
        return f"~{key}"
    return f"{prefix}{key}={draw(VALUES)}"


@settings(max_examples=200, deadline=timedelta(seconds=30), suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(override(), max_size=4), st.booleans())
def test_random_overrides_give_a_config_or_one_config_error(overrides, multirun) -> None:
    try:
        result = check_overrides(overrides, multirun=multirun)
    except ConfigError as err:
        message = str(err)
        assert message and "\n" not in message and "Traceback" not in message
        return
    assert result is None or isinstance(result, TrainConfig)


@pytest.mark.parametrize(("argv", "message"), [
    (["=3"], "tt-train: error: override '=3': Config group override must be a string or a list. Got int"),
    (["trainer.foo=1"], "tt-train: error: override 'trainer.foo=1': Could not override 'trainer.foo'. To append to your "
                        "config use +trainer.foo=1"),
    (["model=nope"], "tt-train: error: override 'model=nope': In 'train': Could not find 'model/nope' Available options "
                     "in 'model': conv dvs_gesture_conv file lits mlp nir nmnist_conv recurrent recurrent_graph "
                     "sew_resnet18 shd_recurrent two_branch"),
    (["trainer.epochs=${oc.env:TT_UNSET_VAR}"], "tt-train: error: cannot resolve the config: KeyError raised while resolving "
     "interpolation: \"Environment variable 'TT_UNSET_VAR' not found\" (full_key: trainer.epochs)"),
    (["-m", "optim.lr=1e-3,abc"], "tt-train: error: invalid training config: optim.lr: Input should be a valid number, "
                                  "unable to parse string as a number"),
    (["trainer.nan_policy=ignore"], "tt-train: error: invalid training config: trainer.nan_policy: Input should be 'stop' "
                                    "or 'skip'"),
])
def test_tt_train_turns_bad_overrides_into_one_line_and_exit_2(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(sys, "argv", ["tt-train", *argv])
    with pytest.raises(SystemExit) as info:
        train_cli.main()
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]
