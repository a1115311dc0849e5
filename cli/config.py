"""Composing tt-train's config from command-line overrides, with every problem as one :class:`ConfigError`.

Hydra reports bad overrides in many ways (its own exceptions, ``ValueError`` from the
defaults list, OmegaConf errors, sometimes a traceback). ``tt-train`` checks the
overrides first with :func:`check_overrides` (the same composition Hydra does) and
:func:`resolve_config` turns the composed config into a validated
:class:`~tracetorch.training.TrainConfig`; both raise only :class:`ConfigError`, which
the CLI prints as one line with exit status 2. Sweeps (``-m a=1,2``) are checked value
by value.

Example:
    >>> from tracetorch.cli.config import compose_config
    >>> compose_config(["trainer.epochs=2", "optim=sgd"]).optim.name
    'sgd'
    >>> compose_config(["trainer.epoch=2"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tracetorch.cli.config.ConfigError: override 'trainer.epoch=2': Could not override 'trainer.epoch'. ...
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["ConfigError", "check_overrides", "resolve_config", "compose_config", "model_file_overrides", "CONFIG_MODULE",
           "CONFIG_NAME"]

CONFIG_MODULE, CONFIG_NAME = "tracetorch.configs", "train"
MAX_MESSAGE = 600


class ConfigError(ValueError):
    """A command-line override or composed config that tt-train cannot use."""


def _message(err: BaseException) -> str:
    """One line from Hydra's / OmegaConf's multi-line messages (details like full_key kept short)."""
    text = str(err) or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = [line for line in lines if not re.match(r"^(full_key|object_type|reference_type|provider|path)[:=]", line)]
    hint = [line for line in lines if line.startswith("full_key")]
    message = " ".join(head or lines).split(" Config search path:")[0]
    if hint and "Key" in message and "not in struct" not in message:
        message += f" ({hint[0]})"
    message = re.sub(r"\s+", " ", message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module

    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)


def _as_single_runs(overrides: list[str]) -> list[list[str]]:
    """Multirun sweeps (``a=1,2``) become one override list per listed value (ranges and intervals are left to Hydra)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    base, sweeps = [], []
    for override, text in zip(parsed, overrides):
        if not override.is_sweep_override():
            base.append(text)
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - interval() and other sweeper-specific sweeps: only Hydra's sweeper knows them
            continue
        sweeps.append([f"{override.get_key_element()}={v}" for v in values[:20]])
    runs = [base + [choices[0] for choices in sweeps]]
    for index, choices in enumerate(sweeps):
        for choice in choices[1:]:
            runs.append(base + [c[0] if i != index else choice for i, c in enumerate(sweeps)])
    return runs


def model_file_overrides(args: list[str]) -> list[str]:
    """``model=path/to/net.yaml`` (a model file, not a config group choice) -> ``model=file model.file=<path>``;
    ``model=net.nir`` -> ``model=nir model.path=<path>``."""
    from pathlib import Path

    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key == "model" and value.endswith((".yaml", ".yml", ".nir")) and "," not in value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise ConfigError(f"override {arg!r}: no such model file {value!r} (a config group choice has no suffix: "
                                  f"model=mlp)")
            nir = path.suffix == ".nir"
            out += ["model=nir" if nir else "model=file", f"model.{'path' if nir else 'file'}={path.resolve()}"]
        else:
            out.append(arg)
    return out


def _check_model_file(cfg: DictConfig) -> None:
    """A model file named on the command line is validated now: its first problem as file:line: location: message."""
    from tracetorch.builder import SpecError, load_spec

    path = OmegaConf.select(cfg, "model.file")
    if not path:
        return
    try:
        load_spec(path)
    except SpecError as err:
        from tracetorch.cli.errors import one_line

        raise ConfigError(one_line(err)) from None


def _suggest(override: str) -> str:
    """' (did you mean trainer.epochs?)' for a misspelt key of a closed config section."""
    from tracetorch.suggest import close_matches, did_you_mean
    from tracetorch.training.config import TrainConfig

    key = override.split("=", 1)[0].lstrip("+~")
    *sections, last = key.split(".")
    fields: Any = TrainConfig.model_fields
    for section in sections:
        annotation = getattr(fields.get(section), "annotation", None)
        fields = getattr(annotation, "model_fields", None)
        if fields is None:
            return ""
    close = close_matches(last, fields, n=1)
    return f" ({did_you_mean(['.'.join([*sections, close[0]])], quote=False)})" if close else ""


def check_overrides(overrides: list[str], multirun: bool = False) -> Any:
    """Compose ``configs/train.yaml`` with ``overrides`` as Hydra would, resolve and validate it.

    Returns the :class:`~tracetorch.training.TrainConfig` (of the first run of a sweep),
    or None when an override uses the ``${hydra:...}`` resolver (only a real run can resolve it).
    """
    try:
        runs = _as_single_runs(overrides) if multirun else [list(overrides)]
    except Exception as err:  # noqa: BLE001 - Hydra's parser raises several types; all mean the same to the user
        raise ConfigError(_message(err)) from None
    results = []
    for run in runs:
        try:
            cfg = _compose(run)
        except Exception as err:  # noqa: BLE001
            culprit = _culprit(run, err)
            message = _message(err)
            if culprit and "Could not override" in message:
                hint = _suggest(culprit)
                if hint:
                    message = f"no such key{hint}"
            raise ConfigError(f"override {culprit!r}: {message}" if culprit else message) from None
        _check_model_file(cfg)
        if any("${hydra:" in override for override in run):
            return None
        results.append(resolve_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    return results[0]


def _culprit(overrides: list[str], err: BaseException) -> str | None:
    """The override an error is about, when it can be told (first one whose key appears in the message)."""
    text = str(err)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key and (f"'{override}'" in text or f"'{key}'" in text):
            return override
    return overrides[0] if len(overrides) == 1 else None


def resolve_config(cfg: DictConfig | dict[str, Any]) -> Any:
    """Resolve interpolations and validate: a :class:`~tracetorch.training.TrainConfig`, or :class:`ConfigError`."""
    from tracetorch.training.config import TrainConfig

    try:
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        config = {k: v for k, v in cfg.items() if k != "hydra"}
    except Exception as err:  # noqa: BLE001 - interpolation / resolver errors of any kind
        raise ConfigError(f"cannot resolve the config: {_message(err)}") from None
    try:
        return TrainConfig.from_any(config)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None


def compose_config(overrides: list[str]) -> Any:
    """The validated :class:`~tracetorch.training.TrainConfig` tt-train would run with (see :func:`check_overrides`)."""
    return check_overrides(overrides)
