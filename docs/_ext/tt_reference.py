"""Reference pages generated from the code, so they cannot drift from it.

Each ``*_md()`` function returns a Markdown fragment read from one source of truth:

* :func:`layer_parameters_md`, :func:`layer_table_md`, :func:`layer_keywords_md`: the grammar's parameter
  table (``tracetorch.snn.grammar``) and the layers' signatures;
* :func:`model_file_md`: the builder's Pydantic schema (``tracetorch.builder.schema``);
* :func:`train_config_md`: the trainer's config schema (``TrainConfig``, walked through ``model_fields``)
  and the YAML files in ``configs/`` (their comments give the meanings);
* :func:`cli_md`: the ``--help`` of every console script listed in ``pyproject.toml``.

The Sphinx extension writes them to ``docs/_generated/`` before the sources are read;
the reference pages include them. Run this file to print one: ``python docs/_ext/tt_reference.py cli``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "_generated"


# ---- Markdown helpers --------------------------------------------------------------------------


def cell(value: Any) -> str:
    """One table cell: pipes escaped, newlines folded, ``<`` escaped outside code spans (not raw HTML)."""
    parts = str(value).replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(part if i % 2 else part.replace("<", "\\<") for i, part in enumerate(parts))


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def code(text: Any) -> str:
    return f"`{text}`"


def type_name(annotation: Any) -> str:
    """A readable type: ``int | None``, ``'bptt' | 'tbptt'``, ``list[int]``."""
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        if len(args) > 8:
            return f"one of {len(args)} entry types"
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else getattr(origin, "__name__", str(origin))
    if isinstance(annotation, type):
        return {"StrictInt": "int", "StrictFloat": "float", "StrictStr": "str", "StrictBool": "bool"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation).replace("typing.", "")


def show_default(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if callable(value):
        return f"`{getattr(value, '__name__', type(value).__name__)}`"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def field_default(field: Any) -> str:
    """A Pydantic field's default as shown in the tables (``required`` when it has none)."""
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return show_default(field.default_factory())
    return "required" if field.default is PydanticUndefined else show_default(field.default)


def rst_to_myst(text: str) -> str:
    """Docstring markup in Markdown: ````x```` -> ```x```, ``:role:`x``` -> ``{role}`x```."""
    return re.sub(r":(\w+):`", r"{\1}`", re.sub(r"``([^`]+)``", r"`\1`", text))


def field_rows(model: Any, meanings: dict[str, str] | None = None) -> list[list[str]]:
    """``key, type, default, constraint, meaning`` for every field of a Pydantic model."""
    rows = []
    for name, field in model.model_fields.items():
        default = field_default(field)
        bounds = []
        for meta in field.metadata:
            for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >=")):
                if getattr(meta, attr, None) is not None:
                    bounds.append(f"{sign} {getattr(meta, attr)}")
        meaning = field.description or (meanings or {}).get(name, "")
        rows.append([code(name), type_name(field.annotation), default, ", ".join(bounds), meaning])
    return rows


# ---- layers: the grammar's parameter table ------------------------------------------------------


def _added_by(param: str) -> str:
    """Which names have a parameter, derived from the table: families and required/forbidden prefixes."""
    from tracetorch.snn import layer_names, param_specs, parse

    holders = [parse(n) for n in layer_names() if param in {s.name for s in param_specs(parse(n))}]
    families = sorted({f.family for f in holders}, key=["LI", "LIEMA", "LIB", "LIT", "LITS"].index)
    parts = ["every family" if len(families) == 5 else ", ".join(families)]
    for letter, attr in (("D", "dual"), ("S", "synaptic"), ("R", "recurrent")):
        values = {getattr(f, attr) for f in holders}
        if values == {True}:
            parts.append(f"with `{letter}`")
        elif values == {False}:
            parts.append(f"without `{letter}`")
    return "; ".join(parts) + f" ({len(holders)} layers)"


def layer_parameters_md() -> str:
    """Every parameter of the 32 layers: default, constraint, meaning, which names have it."""
    from tracetorch.core.constraints import CONSTRAINTS
    from tracetorch.snn import layer_names, param_specs, parse

    seen: dict[str, Any] = {}
    for name in layer_names():
        for spec in param_specs(parse(name)):
            seen.setdefault(spec.name, spec)
    rows = [
        [code(s.name), f"`{s.default:g}`", f"{s.constraint}: {CONSTRAINTS[s.constraint].describe()}", s.doc, _added_by(s.name)]
        for s in seen.values()
    ]
    return table(["parameter", "default", "constraint (allowed values)", "meaning", "which layers have it"], rows)


def layer_table_md() -> str:
    """The 32 names with their parameters and hidden states."""
    from tracetorch.snn import layer_names, param_specs, parse, state_names

    rows = []
    for name in layer_names():
        flags = parse(name)
        rows.append([f"{{class}}`~tracetorch.snn.{name}`", flags.family,
                     ", ".join(s.name for s in param_specs(flags)), ", ".join(state_names(flags))])
    return table(["layer", "family", "parameters", "hidden states"], rows)


def layer_keywords_md() -> str:
    """The keywords every layer takes besides its parameters, from the generated signatures."""
    from tracetorch.snn import LAYERS, param_specs, parse

    signature = inspect.signature(LAYERS["DSRLITS"])
    params = {s.name for s in param_specs(parse("DSRLITS"))}
    rows = []
    for p in signature.parameters.values():
        base = p.name.removesuffix("_rank").removeprefix("learn_")
        if p.name in params:
            continue
        if base in params and p.name.endswith("_rank"):
            rows.append(["`<p>_rank`", "`1`", "0: one shared value, 1: one value per neuron"])
        elif base in params:
            rows.append(["`learn_<p>`", "`True`", "True: `raw_<p>` is an `nn.Parameter`; False: a buffer"])
        else:
            default = "required" if p.default is inspect.Parameter.empty else show_default(p.default)
            rows.append([code(p.name), default, _KEYWORD_MEANING.get(p.name, "")])
    unique = list({r[0]: r for r in rows}.values())
    return table(["keyword", "default", "meaning"], unique)


_KEYWORD_MEANING = {
    "num_neurons": "size of the neuron dimension",
    "dim": "which input dimension holds the neurons (-1 for `[B, N]`, -3 for `[B, C, H, W]`)",
    "spike_fn": "firing layers: surrogate firing function of `mem - threshold`",
    "quant_fn": "firing layers: quantizer applied to `spike_fn`'s output (identity: graded events)",
}


# ---- model files: the builder's Pydantic schema -------------------------------------------------


def model_file_md() -> str:
    """Top-level keys, the SNN layer keys, and every torch layer's keys with types and defaults."""
    from tracetorch.builder import registry
    from tracetorch.builder.schema import INFERABLE, ModelSpec, args_model
    from tracetorch.core.constraints import CONSTRAINTS
    from tracetorch.snn import param_specs, parse

    head = ["key", "type", "default", "constraint", "meaning"]
    out = ["## Top-level keys\n\n", table(head, field_rows(ModelSpec))]
    out.append("\nEach entry of `layers` is a one-key mapping `{LayerName: {keys}}` (`{}` or `null`: all defaults).\n")
    out.append("\n## SNN layer keys\n\nAny of the 32 layer names. The keys of the fullest one, `DSRLITS`, are below; "
               "every other name takes the subset in the [layer reference](layers.md). A parameter is a number, a list "
               "of `num_neurons` numbers, or `{value, rank, learn}`; `null` means its default.\n\n")
    params = {spec.name: spec for spec in param_specs(parse("DSRLITS"))}
    rows = []
    for row in field_rows(args_model("DSRLITS")):
        key = row[0].strip("`")
        if key in params:
            row[1], row[2] = "number | list | {value, rank, learn}", f"`{params[key].default:g}`"
            row[3] = CONSTRAINTS[params[key].constraint].describe()
            row[4] = row[4] or params[key].doc
        elif key in ("spike_fn", "quant_fn"):
            names = ", ".join(code(n) for n in registry.function_names(key))
            row[1], row[4] = "name | {name, <arguments>}", f"registered names: {names}"
        rows.append(row)
    out.append(table(head, rows))
    out.append("\n## Torch layers\n\nKeys from each constructor's signature; `inferred` ones may be left out "
               "when `input_shape` is given.\n")
    for cls in registry.TORCH_LAYERS:
        rows = [r[:3] for r in field_rows(args_model(cls.__name__))]
        for row in rows:
            if row[0].strip("`") in INFERABLE and row[2] in ("required", "`null`"):
                row[2] = "inferred"
        out.append(f"\n### {cls.__name__}\n\n")
        out.append(table(["key", "type", "default"], rows) if rows else "No keys.\n")
    return "".join(out)


# ---- tt-train configuration: the config schema and configs/ --------------------------------------


def train_config_class() -> Any:
    """The top-level training config class, wherever the training package keeps it."""
    for module, name in (("tracetorch.training", "TrainConfig"), ("tracetorch.training.config", "TrainConfig")):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError("no TrainConfig found in tracetorch.training")


def configs_dir() -> Path:
    import tracetorch.configs

    return Path(tracetorch.configs.__file__).resolve().parent


def yaml_comments(path: Path) -> tuple[str, dict[str, str]]:
    """A YAML file's leading comment (its description) and ``key: value  # meaning`` comments of top-level keys."""
    head, keys = [], {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and not keys and not line.startswith("# @package"):
            head.append(line.lstrip("#").strip())
            continue
        match = re.match(r"^([A-Za-z_]\w*):[^#]*#\s*(.+)$", line)
        if match:
            keys.setdefault(match.group(1), match.group(2).strip())
        elif re.match(r"^[A-Za-z_]\w*:", line):
            keys.setdefault(line.split(":", 1)[0], "")
    return re.sub(r"\s+", " ", " ".join(head)).strip(), keys


def group_defaults() -> dict[str, str | None]:
    """The default choice of each config group, from ``train.yaml``'s defaults list."""
    doc = yaml.safe_load((configs_dir() / "train.yaml").read_text(encoding="utf-8"))
    choices: dict[str, str | None] = {}
    for entry in doc.get("defaults", []):
        if isinstance(entry, dict):
            choices.update({str(k): v for k, v in entry.items()})
    return choices


def _group_files(group: str) -> list[Path]:
    folder = configs_dir() / group
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def _meanings(group: str, default: str | None) -> dict[str, str]:
    files = _group_files(group)
    files.sort(key=lambda p: p.stem != default)  # the default file's comments first
    meanings: dict[str, str] = {}
    for path in files:
        for key, text in yaml_comments(path)[1].items():
            if text and key not in meanings:
                meanings[key] = text
    return meanings


def _choices_table(group: str, default: str | None) -> str:
    rows = []
    for path in _group_files(group):
        description, keys = yaml_comments(path)
        name = f"**{path.stem}** (default)" if path.stem == default else path.stem
        rows.append([name, description, ", ".join(code(k) for k in keys if k != "defaults")])
    return table([f"`{group}=`", "what it is", "keys it sets"], rows) if rows else ""


def model_of(annotation: Any) -> Any:
    """The Pydantic model a field holds (directly or as ``Model | None``), else None: such a field is a section."""
    from pydantic import BaseModel

    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = typing.get_args(annotation) if union else (annotation,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _section_md(path: str, section: Any, meanings: dict[str, str], used: dict[str, Any]) -> str:
    """One section's table, then one sub-section per nested section (``trainer.checkpoint`` ...), recursively."""
    rows, nested = [], []
    for row, (key, field) in zip(field_rows(section, meanings), section.model_fields.items()):
        if model_of(field.annotation) is not None:
            nested.append((key, model_of(field.annotation)))
            row[4] = row[4] or f"a section: see `{path}.{key}` below"
        value = used.get(key) if isinstance(used, dict) else None
        rows.append([row[0], row[1], show_default(value) if isinstance(used, dict) and key in used else row[2]] + row[2:])
    out = [table(["key", "type", "tt-train default", "Python default", "constraint", "meaning"], rows)]
    for key, model in nested:
        doc = rst_to_myst(inspect.cleandoc(model.__doc__ or ""))
        sub = used.get(key) if isinstance(used, dict) and isinstance(used.get(key), dict) else {}
        out.append(f"\n### `{path}.{key}`\n\n{doc}\n\n" + _section_md(f"{path}.{key}", model, {}, sub))
    return "".join(out)


def train_config_md() -> str:
    """Every group and key of ``tt-train``'s config: type, defaults, constraint, meaning, and the files per group."""
    config = train_config_class()
    defaults = group_defaults()
    top_level = yaml.safe_load((configs_dir() / "train.yaml").read_text(encoding="utf-8"))
    out = []
    top = [[code(k), type_name(f.annotation), show_default(top_level.get(k)) if k in top_level else "", field_default(f),
            f.description or ""] for k, f in config.model_fields.items() if model_of(f.annotation) is None]
    out.append("## Top-level keys\n\n" + table(["key", "type", "tt-train default", "Python default", "meaning"], top)
               + "\n`model` is a [model file](model-file.md) (a `layers` list and its `input_shape`); choose one of "
                 "`configs/model/` with `model=<file>`.\n")
    for name, field in config.model_fields.items():
        section = model_of(field.annotation)
        if section is None:
            continue
        default = defaults.get(name)
        doc = rst_to_myst(inspect.cleandoc(section.__doc__ or ""))
        out.append(f"\n## `{name}`\n\n{doc}\n\n")
        if section.model_config.get("extra") == "allow":
            out.append("Keys not listed here are passed on (to the dataset function, the encoder or the optimizer), "
                       "which checks them against its own signature.\n\n")
        used: dict[str, Any] = {}
        if default is not None and (configs_dir() / name / f"{default}.yaml").exists():
            used = yaml.safe_load((configs_dir() / name / f"{default}.yaml").read_text(encoding="utf-8")) or {}
            out.append(f"`tt-train default`: the value in `configs/{name}/{default}.yaml`; `Python default`: the value "
                       "when the key is left out of a config passed to the Python API.\n\n")
        out.append(_section_md(name, section, _meanings(name, default), used))
        extra = sorted(set(used) - set(section.model_fields))
        if extra:
            out.append(f"\nAlso set by `{default}.yaml` and passed on: "
                       + ", ".join(f"{code(k)} = {show_default(used[k])}" for k in extra) + ".\n")
        choices = _choices_table(name, default)
        if choices:
            out.append(f"\nFiles in `configs/{name}/` (choose one with `{name}=<file>`):\n\n{choices}")
    for group in sorted(p.name for p in configs_dir().iterdir() if p.is_dir() and not p.name.startswith("_")):
        if group in config.model_fields and group != "model":
            continue
        out.append(f"\n## `{group}` (files)\n\n")
        out.append(_choices_table(group, defaults.get(group)) or "No files.\n")
    return "".join(out)


# ---- command-line programs: their own --help ------------------------------------------------------


def console_scripts() -> dict[str, str]:
    """``name -> module:function`` from ``pyproject.toml`` (new commands appear here by themselves)."""
    import tomllib  # Python >= 3.11, as Sphinx 9 is

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return dict(project.get("scripts", {}))


_HELP_CHILD = """
import contextlib, io, importlib, json, sys
out = {}
for name, target in json.loads(sys.argv[1]).items():
    module, function = target.split(":")
    sys.argv = [name, "--help"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            getattr(importlib.import_module(module), function)()
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise
    out[name] = buffer.getvalue()
sys.stdout.write(json.dumps(out))
"""


def help_texts(scripts: dict[str, str]) -> dict[str, str]:
    """The ``--help`` output of each console script, run in one fresh interpreter (not the Sphinx process)."""
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run([sys.executable, "-c", _HELP_CHILD, json.dumps(scripts)], capture_output=True, text=True,
                            env=env, timeout=300, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"--help of the console scripts failed: {result.stderr[-2000:]}")
    return {name: re.sub(r"\x1b\[[0-9;]*m", "", text).rstrip() for name, text in json.loads(result.stdout).items()}


def cli_md() -> str:
    out = []
    scripts = console_scripts()
    helps = help_texts(scripts)
    for name, target in scripts.items():
        module = importlib.import_module(target.split(":")[0])
        summary = inspect.cleandoc(module.__doc__ or "").split("\n\n")[0]
        out.append(f"## `{name}`\n\n{summary}\n\nEntry point: `{target}`.\n\n```text\n$ {name} --help\n{helps[name]}\n```\n\n")
    return "".join(out)


# ---- the Sphinx extension -------------------------------------------------------------------------

GENERATORS = {
    "layer_parameters": layer_parameters_md,
    "layer_table": layer_table_md,
    "layer_keywords": layer_keywords_md,
    "model_file": model_file_md,
    "train_config": train_config_md,
    "cli": cli_md,
}


def write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app: Any = None) -> None:
    for name, make in GENERATORS.items():
        write_if_changed(OUT / f"{name}.md", "<!-- generated by docs/_ext/tt_reference.py: do not edit -->\n\n" + make())


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}


if __name__ == "__main__":
    print(GENERATORS[sys.argv[1]]())
