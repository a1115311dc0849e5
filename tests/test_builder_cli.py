"""tt-validate (exit 0 / 2, summary table, every problem) and tt-schema (valid JSON Schema)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tracetorch.cli import schema as schema_cli
from tracetorch.cli import validate as validate_cli

import tracetorch as tt

CONFIGS = [p for p in sorted((Path(__file__).parents[1] / "configs" / "model").glob("*.yaml")) if "\nlayers:" in p.read_text()]
# chain specs; graph specs (nodes:) are tested in test_builder_graph*.py, file.yaml and nir.yaml name no layers
MLP = Path(__file__).parents[1] / "configs" / "model" / "mlp.yaml"


def test_validate_prints_a_table_and_exits_0(capsys) -> None:
    assert validate_cli.main([str(MLP), "--input-shape", "1", "28", "28"]) == 0
    out = capsys.readouterr().out
    assert "mlp.yaml: OK" in out
    for header in ("layer", "output shape", "parameters", "learnable"):
        assert header in out
    # Linear 784 -> 128: 100,480 parameters; LIB(128): beta, threshold, bias = 384, one state of 128 per sample
    assert "│ 1 │ Linear  │ [128]        │    100,480 │   100,480 │" in out
    assert "│ 2 │ LIB     │ [128]        │        384 │       384 │                    128 │" in out
    assert "│   │ total   │              │    119,060 │   119,060 │                    266 │" in out


def test_validate_lists_every_problem_and_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("input_shape: [4]\nlayers:\n  - SDLIB: {}\n  - LIB: {alpha: 0.5}\n")
    assert validate_cli.main([str(MLP), str(bad), "--input-shape", "1", "28", "28"]) == 2
    captured = capsys.readouterr()
    assert "mlp.yaml: OK" in captured.out
    assert captured.err.splitlines() == [
        f"{bad}: 2 problems",
        f"{bad}:3: layers[0]: unknown layer 'SDLIB': prefixes go in the order D, S, R; did you mean 'DSLIB'?",
        f"{bad}:4: layers[1].LIB.alpha: LIB has no synaptic trace; SLIB has alpha",
    ]


def test_frozen_parameters_count_as_parameters_not_learnable(tmp_path: Path, capsys) -> None:
    path = tmp_path / "frozen.yaml"
    path.write_text("input_shape: [5]\nlayers:\n  - SLIB: {alpha: {value: 0.5, learn: false}, beta: {value: 0.9, rank: 0}}\n")
    assert validate_cli.main([str(path)]) == 0
    # alpha 5 (frozen) + beta 1 + threshold 5 + bias 5 = 16 parameters, 11 learnable; syn + mem = 10 states
    assert "│ 0 │ SLIB  │ [5]          │         16 │        11 │                     10 │" in capsys.readouterr().out


def test_installed_console_script(tmp_path: Path) -> None:
    exe = shutil.which("tt-validate", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("tt-validate is not installed in this environment")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers:\n  - LIB: {beta: 2}\n")
    result = subprocess.run([exe, str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{bad}:2: layers[0].LIB.beta: beta must be in (0, 1), got 2" in result.stderr


def _schema(tmp_path: Path) -> dict:
    out = tmp_path / "spec.schema.json"
    assert schema_cli.main(["-o", str(out)]) == 0
    return json.loads(out.read_text())


def test_schema_lists_every_layer_and_the_parameter_table(tmp_path: Path) -> None:
    schema = _schema(tmp_path)
    refs = [o["$ref"].split("/")[-1] for o in schema["properties"]["layers"]["items"]["oneOf"]]
    assert refs == [f"{n}Layer" for n in tt.builder.registered_names()]
    lib = schema["$defs"]["SRLIBArgs"]
    assert list(lib["properties"]) == ["num_neurons", "dim", "alpha", "beta", "gamma", "rec_weight", "threshold", "bias",
                                       "spike_fn", "quant_fn"]
    assert lib["additionalProperties"] is False
    assert lib["properties"]["beta"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0.0, "exclusiveMaximum": 1.0}


def test_schema_to_stdout_is_json(capsys) -> None:
    assert schema_cli.main([]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "traceTorch model spec"


def test_schema_validates_the_example_files_and_rejects_broken_ones(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _schema(tmp_path)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in CONFIGS:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], (path, errors[:1])
    broken = [
        {"layers": [{"SDLIB": {}}]},
        {"layers": [{"LIB": {"alpha": 0.5}}]},
        {"layers": [{"LIB": {"beta": 1.5}}]},
        {"layers": [{"LIB": {"beta": {"value": 0.5, "rank": 2}}}]},
        {"layers": [{"Linear": {"out_features": "ten"}}]},
        {"layers": [{"LI": {}}], "input_shap": [4]},
    ]
    for document in broken:
        assert not validator.is_valid(document), document


def test_schema_agrees_with_pydantic_on_the_examples() -> None:
    """Without jsonschema: the schema is generated from the same models that accept the examples."""
    for path in CONFIGS:
        spec = tt.load_spec(path)
        assert tt.builder.ModelSpec.model_validate(spec.to_dict()) == spec


@pytest.mark.parametrize("spelling", [["1", "28", "28"], ["1,28,28"], ["1x28x28"]])
def test_input_shape_has_one_spelling_for_every_command(spelling: list[str], capsys) -> None:
    from tracetorch.cli.arguments import parse_shape

    assert parse_shape(spelling) == [1, 28, 28]
    assert validate_cli.main([str(MLP), "--input-shape", *spelling]) == 0
    assert "mlp.yaml: OK" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["1", "0", "28"], ["1,-28"], ["28.5"], ["a"]])
def test_a_bad_input_shape_is_named(bad: list[str], capsys) -> None:
    from tracetorch.cli import export as export_cli

    for main in (validate_cli.main, lambda argv: export_cli.main([*argv, "-o", "unused.nir"])):
        with pytest.raises(SystemExit) as exit_info:
            main([str(MLP), "--input-shape", *bad])
        assert exit_info.value.code == 2
        assert f"argument --input-shape: expected positive sizes like 1 28 28 or 1,28,28, got {' '.join(bad)!r}" in \
            capsys.readouterr().err
