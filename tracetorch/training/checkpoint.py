"""Checkpoints: a directory of safetensors + JSON files with a manifest written last.

A checkpoint ``<run_dir>/checkpoints/step_<global step>/`` holds

* ``model.safetensors``: the weights (``state_dict``);
* ``states.safetensors``: the hidden states of every traceTorch layer;
* ``trainer.safetensors`` + ``trainer.json``: optimizer, scheduler, AMP scaler, RNG
  states (torch, CUDA, numpy, python), progress (epoch, batch, step) and the metrics
  history, split into tensors and a JSON skeleton (nothing is ever unpickled);
* ``config.yaml``: the resolved training config;
* ``manifest.json``: size and SHA-256 of every file above, written last.

Every file is written with :func:`tracetorch.core.state_io.atomic_write` (temporary file
+ ``os.replace``). A checkpoint without a manifest, or whose files do not match it, is
refused with a :class:`CheckpointError` naming the problem, so a crash mid-write never
passes for a good checkpoint.

Example:
    >>> import tempfile, torch
    >>> from tracetorch.training.checkpoint import pack_tree, unpack_tree
    >>> skeleton, tensors = pack_tree({"state": {0: {"step": torch.tensor(3.0)}}, "betas": (0.9, 0.99)})
    >>> skeleton["betas"], sorted(tensors)
    ({'__tuple__': [0.9, 0.99]}, ['t0'])
    >>> unpack_tree(skeleton, tensors)["state"][0]["step"]
    tensor(3.)
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from tracetorch.core.model import iter_layers
from tracetorch.core.state_io import StateFileError, atomic_write, read_state_file, write_state_file

__all__ = [
    "CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
    "pack_tree", "unpack_tree", "capture_rng", "restore_rng", "model_states", "load_model_states",
]

FORMAT = "tracetorch-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, corrupt or does not fit the run."""


# ---- tensors + JSON skeleton ---------------------------------------------------------


def pack_tree(obj: Any) -> tuple[Any, dict[str, Tensor]]:
    """Split a nested structure into a JSON-able skeleton and ``{key: tensor}``.

    Tensors become ``{"__tensor__": key}``, tuples ``{"__tuple__": [...]}``, dicts with
    non-string keys ``{"__items__": [[key, value], ...]}``, numpy arrays tensors.
    """
    tensors: dict[str, Tensor] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x.astype(np.int64) if x.dtype.kind in "ui" else x)
        if isinstance(x, Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: walk(v) for k, v in x.items()}
            return {"__items__": [[walk(k), walk(v)] for k, v in x.items()]}
        if isinstance(x, (np.integer, np.floating, np.bool_)):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise CheckpointError(f"cannot store a {type(x).__name__} in a checkpoint (only tensors, numbers, strings, lists, dicts)")

    return walk(obj), tensors


def unpack_tree(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`pack_tree`."""
    if isinstance(skeleton, list):
        return [unpack_tree(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"trainer state refers to a missing tensor {key!r}")
            return tensors[key]
        if "__tuple__" in skeleton:
            return tuple(unpack_tree(v, tensors) for v in skeleton["__tuple__"])
        if "__items__" in skeleton:
            return {unpack_tree(k, tensors): unpack_tree(v, tensors) for k, v in skeleton["__items__"]}
        return {k: unpack_tree(v, tensors) for k, v in skeleton.items()}
    return skeleton


# ---- RNG states ----------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Every global RNG state: torch, CUDA (all devices), numpy, python."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"], "pos": int(np_state["state"]["pos"])}},
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured (CUDA states only when CUDA is present)."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]][: torch.cuda.device_count()])
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32), "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ---- hidden states of any module -----------------------------------------------------


def model_states(model: nn.Module) -> dict[str, Tensor]:
    """Hidden states of every traceTorch layer in ``model`` (empty tensor for a state still None)."""
    save = getattr(model, "save_states", None)
    if callable(save):
        return save()
    out = {}
    for path, layer in iter_layers(model):
        for name, value in layer.states():
            out[f"{path}.{name}" if path else name] = torch.empty(0) if value is None else value.detach().clone()
    return out


def load_model_states(model: nn.Module, states: dict[str, Tensor]) -> None:
    load = getattr(model, "load_states", None)
    if callable(load):
        load(states, strict=False)
        return
    layers = dict(iter_layers(model))
    for key, value in states.items():
        path, _, name = key.rpartition(".")
        if path in layers and name in layers[path].state_names():
            object.__setattr__(layers[path], name, None if value.numel() == 0 and value.ndim == 1 else value)


# ---- save / load ---------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


@dataclass
class Checkpoint:
    """A loaded checkpoint: everything needed to continue or evaluate a run."""

    path: Path
    weights: dict[str, Tensor]
    states: dict[str, Tensor]
    trainer: dict[str, Any]
    config: dict[str, Any]
    manifest: dict[str, Any]


def save_checkpoint(
    directory: str | Path,
    *,
    model: nn.Module,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint into ``directory`` (created; an old manifest there is removed first)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    write_state_file(directory / "model.safetensors", weights)
    write_state_file(directory / "states.safetensors", model_states(model))
    skeleton, tensors = pack_tree(trainer_state)
    write_state_file(directory / "trainer.safetensors", tensors)
    _write_text(directory / "trainer.json", json.dumps(skeleton))
    _write_text(directory / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    files = ["model.safetensors", "states.safetensors", "trainer.safetensors", "trainer.json", "config.yaml"]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        **(info or {}),
        "files": {name: {"bytes": (directory / name).stat().st_size, "sha256": _sha256(directory / name)} for name in files},
    }
    _write_text(directory / MANIFEST, json.dumps(manifest, indent=2))
    return directory


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a checkpoint, checked against the files (``verify``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: incomplete checkpoint (no {MANIFEST}); it was interrupted while being written")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} v{VERSION} manifest")
    if verify:
        for name, meta in manifest["files"].items():
            file = directory / name
            if not file.is_file():
                raise CheckpointError(f"{directory}: file {name} listed in the manifest is missing")
            if file.stat().st_size != meta["bytes"] or _sha256(file) != meta["sha256"]:
                raise CheckpointError(f"{directory}: file {name} does not match its manifest entry (corrupt or modified)")
    return manifest


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    try:
        weights = read_state_file(directory / "model.safetensors")
        states = read_state_file(directory / "states.safetensors")
        tensors = read_state_file(directory / "trainer.safetensors")
    except StateFileError as err:
        raise CheckpointError(str(err)) from None
    skeleton = json.loads((directory / "trainer.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))
    return Checkpoint(directory, weights, states, unpack_tree(skeleton, tensors), config, manifest)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest global step under ``run_dir/checkpoints`` (None if none)."""
    best: tuple[int, Path] | None = None
    for candidate in sorted(Path(run_dir, "checkpoints").glob("*/")):
        try:
            step = int(read_manifest(candidate, verify=False).get("global_step", -1))
        except CheckpointError:
            continue
        if best is None or step >= best[0]:
            best = (step, candidate)
    return None if best is None else best[1]
