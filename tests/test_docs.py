"""The documentation: generated reference pages match the code, and the site builds warning-free.

The generators (``docs/_ext/tt_reference.py``) are checked against the code they read
without Sphinx; the build itself (``sphinx-build -W --keep-going``, nitpicky, the fastest
tutorials only) runs when the ``[docs]`` extra is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def load_reference():
    spec = importlib.util.spec_from_file_location("tt_reference", DOCS / "_ext" / "tt_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = load_reference()


def rows(markdown: str) -> dict[str, list[str]]:
    """Table rows keyed by their first cell (backticks stripped)."""
    out = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[cells[0].strip("`*")] = cells
    return out


def test_layer_parameter_table_is_the_grammar_table():
    from tracetorch.core.constraints import CONSTRAINTS
    from tracetorch.snn import layer_names, param_specs, parse

    table = rows(ref.layer_parameters_md())
    specs = {s.name: s for n in layer_names() for s in param_specs(parse(n))}
    assert set(table) - {"parameter"} == set(specs)
    for name, spec in specs.items():
        holders = sum(name in {s.name for s in param_specs(parse(n))} for n in layer_names())
        assert table[name][1] == f"`{spec.default:g}`"
        assert table[name][2] == f"{spec.constraint}: {CONSTRAINTS[spec.constraint].describe()}"
        assert table[name][4].endswith(f"({holders} layers)")
    assert table["alpha"][4].startswith("every family; without `D`; with `S`")
    assert table["threshold"][4] == "LIB (8 layers)"
    assert table["pos_gamma"][4] == "LIB, LIT, LITS; with `D`; with `R` (6 layers)"


def test_layer_table_lists_the_32_layers_with_their_states():
    from tracetorch.snn import layer_names, parse, state_names

    table = rows(ref.layer_table_md())
    names = {k.split("tracetorch.snn.")[1].rstrip("`"): v for k, v in table.items() if "tracetorch.snn." in k}
    assert list(names) == list(layer_names())
    for name, cells in names.items():
        assert cells[3] == ", ".join(state_names(parse(name)))


def test_model_file_reference_has_every_key_of_the_schema():
    from tracetorch.builder import registry
    from tracetorch.builder.schema import ModelSpec, args_model

    text = ref.model_file_md()
    for key in ModelSpec.model_fields:
        assert f"| `{key}` |" in text
    for cls in registry.TORCH_LAYERS:
        section = text.split(f"### {cls.__name__}\n", 1)[1].split("\n### ", 1)[0]
        assert set(rows(section)) - {"key"} == set(args_model(cls.__name__).model_fields)
    assert rows(text)["in_features"][2] == "inferred"
    assert "`round_ste`" in text


def test_training_config_reference_has_every_group_and_key():
    """Every key of every (nested) section, with the default tt-train uses, the schema's default and a meaning
    taken from the field's description or the comment beside the key in its group's YAML files."""
    import yaml

    config = ref.train_config_class()
    text = ref.train_config_md()
    defaults = ref.group_defaults()

    def check(path: str, model, used: dict, meanings: dict) -> None:
        section = rows(text.split(f"## `{path}`\n", 1)[1].split("\n## ", 1)[0])
        for key, field in model.model_fields.items():
            row = section[key]
            assert row[3] == ref.field_default(field), (path, key)
            assert row[2] == (ref.show_default(used[key]) if key in used else row[3]), (path, key)
            meaning = field.description or meanings.get(key, "")
            if meaning:
                assert row[5] == ref.cell(meaning), (path, key)
            nested = ref.model_of(field.annotation)
            if nested is not None:
                check(f"{path}.{key}", nested, used.get(key) or {}, {})

    for name, field in config.model_fields.items():
        assert f"`{name}`" in text
        model = ref.model_of(field.annotation)
        if model is not None:
            default_file = ref.configs_dir() / name / f"{defaults.get(name)}.yaml"
            used = (yaml.safe_load(default_file.read_text()) or {}) if default_file.exists() else {}
            check(name, model, used, ref._meanings(name, defaults.get(name)))
    for group in (p.name for p in ref.configs_dir().iterdir() if p.is_dir() and not p.name.startswith("_")):
        assert f"## `{group}`" in text
        for path in ref.configs_dir().joinpath(group).glob("*.yaml"):
            assert f"| {path.stem} |" in text or f"**{path.stem}** (default)" in text, path


def test_every_training_config_key_has_a_meaning():
    """The schema's descriptions fill the reference's meaning column, top-level keys included."""
    from tracetorch.training import config as schema

    text = ref.train_config_md()
    top = rows(text.split("## Top-level keys\n", 1)[1].split("\n## ", 1)[0])
    for section in (schema.DataConfig, schema.EncoderConfig, schema.OptimConfig, schema.TrainerConfig, schema.TrainConfig):
        for key, field in section.model_fields.items():
            assert field.description and "|" not in field.description, (section.__name__, key)
            if section is schema.TrainConfig and ref.model_of(field.annotation) is None:
                assert top[key][4] == ref.cell(field.description), key


def test_cli_reference_is_every_console_scripts_help():
    pytest.importorskip("tomllib")  # Python >= 3.11
    text = ref.cli_md()
    scripts = ref.console_scripts()
    assert {"tt-train", "tt-eval", "tt-validate", "tt-schema"} <= set(scripts)
    for name in scripts:
        assert f"## `{name}`" in text and f"$ {name} --help" in text
    assert "usage: tt-eval" in text and "--split {test,train}" in text
    assert "== Configuration groups ==" in text  # Hydra's help of tt-train


@pytest.mark.parametrize("name", ["sphinx", "sphinx_gallery", "myst_parser", "furo", "sphinx_copybutton"])
def test_docs_extra_declares_the_build_tools(name):
    tomllib = pytest.importorskip("tomllib")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["docs"]
    assert any(req.replace("-", "_").lower().startswith(name) for req in extra)


def readme_build_command() -> list[str]:
    """The ``sphinx-build`` command of the README's Documentation section."""
    section = (ROOT / "README.md").read_text().split("## Documentation", 1)[1]
    line = re.search(r"```bash\n(.*?)```", section, re.S).group(1).split("#", 1)[0]
    assert 'pip install -e ".[docs]"' in line
    return line.split("&&", 1)[1].split()


def test_docs_build_is_warning_free(tmp_path):
    for module in ("sphinx", "sphinx_gallery", "myst_parser", "furo", "sphinx_copybutton"):
        pytest.importorskip(module)
    out = tmp_path / "html"
    command = readme_build_command()
    assert command[:2] == ["sphinx-build", "-W"] and command[-2:] == ["docs", "docs/_build/html"]
    env = {**os.environ, "TT_DOCS_FAST": "1", "TRACETORCH_KERNELS": "reference", "MPLBACKEND": "Agg"}
    args = [sys.executable, "-m", "sphinx", *command[1:-2], "-q", str(DOCS), str(out)]  # the README's command, into tmp
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "WARNING" not in result.stderr, result.stderr[-5000:]
    index = (out / "index.html").read_text()
    assert "Getting started" in index
    first_run = (out / "getting-started.html").read_text()
    assert "curves.png" in first_run and (out / "_images" / "curves.png").exists() and (out / "_images" / "raster.png").exists()
    assert "DSRLITS" in (out / "reference" / "layers.html").read_text()
    assert "rate coding" in (out / "auto_tutorials" / "plot_encoding.html").read_text().lower()
    assert list((out / "_images").glob("sphx_glr_plot_encoding_*.png")), "the tutorial's plot was not drawn"
    assert (out / "searchindex.js").exists()
