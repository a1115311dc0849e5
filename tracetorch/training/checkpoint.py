"""Checkpoints: a directory of safetensors + JSON files with a manifest written last.

A checkpoint ``<run_dir>/checkpoints/step_<global step>/`` holds

* ``model.safetensors``: the weights (``state_dict``);
* ``states.safetensors``: the hidden states of every traceTorch layer;
* ``trainer.safetensors`` + ``trainer.json``: optimizer, scheduler, AMP scaler, RNG
  states (torch, CUDA, numpy, python), progress (epoch, batch, step) and the metrics
  history, split into tensors and a JSON skeleton (nothing is ever unpickled);
* ``config.yaml``: the resolved training config;
* ``manifest.json``: size and SHA-256 of every file above, written last.

Crash safety: a checkpoint is written into a hidden sibling directory
(``.step_<n>.partial-<pid>``), every file and the directory are flushed to disk, and
only then is the directory renamed to its real name, so ``step_*`` directories are
always complete; a process killed mid-write leaves only a hidden partial directory,
which :func:`remove_partial_checkpoints` cleans up on the next start. A checkpoint
without a manifest, or whose files do not match it, is refused with a
:class:`CheckpointError` naming the problem.

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
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from torch import Tensor, nn

from tracetorch.core import states as states_of
from tracetorch.core.state_io import StateFileError, atomic_write, read_state_file, write_state_file

__all__ = [
    "CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
    "pack_tree", "unpack_tree", "capture_rng", "restore_rng", "model_states", "load_model_states",
    "remove_partial_checkpoints", "prune_checkpoints", "list_checkpoints",
]

FORMAT = "tracetorch-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "states.safetensors", "trainer.safetensors", "trainer.json", "config.yaml")
PARTIAL = ".partial-"  # hidden directories being written: ``.<name>.partial-<pid>``
OLD = ".old-"  # the previous copy while a step is replaced: ``.<name>.old-<pid>``
TRASH = ".trash-"  # a pruned checkpoint being deleted
COUNTERS = ("epoch", "batch", "global_step")
MAX_COUNTER = 2**62
MAX_DEPTH = 64
SIZE_CAPS = {MANIFEST: 64 << 10, "config.yaml": 4 << 20, "trainer.json": 256 << 20, "default": 64 << 20}


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
    return states_of.save_states(model)


def load_model_states(model: nn.Module, states: dict[str, Tensor]) -> None:
    """Load the states a checkpoint holds (unknown keys ignored; a shape that does not fit is a ``ValueError``)."""
    states_of.load_states(model, states, strict=False)


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


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (renames) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    directory: str | Path,
    *,
    model: nn.Module,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint to ``directory`` all at once: complete, or not there at all.

    The files go into a hidden partial directory beside it, which is renamed to
    ``directory`` once every file is on disk. An existing ``directory`` is replaced
    only after the new checkpoint is complete. On any error (disk full, permission) the
    partial directory is removed and the error re-raised; other checkpoints are untouched.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.parent / f".{directory.name}{PARTIAL}{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    try:
        partial.mkdir()
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        write_state_file(partial / "model.safetensors", weights)
        write_state_file(partial / "states.safetensors", model_states(model))
        skeleton, tensors = pack_tree(trainer_state)
        write_state_file(partial / "trainer.safetensors", tensors)
        _write_text(partial / "trainer.json", json.dumps(skeleton))
        _write_text(partial / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            **(info or {}),
            "files": {name: {"bytes": (partial / name).stat().st_size, "sha256": _sha256(partial / name)} for name in FILES},
        }
        _write_text(partial / MANIFEST, json.dumps(manifest, indent=2))
        _fsync_dir(partial)
        old = None
        if directory.exists():
            old = directory.parent / f".{directory.name}{OLD}{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(directory, old)
        os.replace(partial, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of a checkpoint, validated (format, step counters, file list) and checked against the files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{directory}: incomplete checkpoint (no {MANIFEST}); it was interrupted while being written")
    manifest = _read_structured(path, "JSON")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} v{VERSION} manifest")
    for key in COUNTERS:
        value = manifest.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNTER:
            raise CheckpointError(f"{path}: {key} must be a non-negative integer, got {str(value)[:40]}")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES) or not all(
        isinstance(m, dict) and isinstance(m.get("bytes"), int) and isinstance(m.get("sha256"), str) for m in files.values()
    ):
        raise CheckpointError(f"{path}: malformed manifest (it must list exactly {', '.join(FILES)} with bytes and sha256)")
    if verify:
        for name, meta in files.items():
            file = directory / name
            if not file.is_file():
                raise CheckpointError(f"{directory}: file {name} listed in the manifest is missing")
            size = file.stat().st_size
            if size != meta["bytes"]:
                raise CheckpointError(f"{directory}: file {name} has {size} bytes but the manifest says {meta['bytes']} "
                                      f"(truncated or modified)")
            if _sha256(file) != meta["sha256"]:
                raise CheckpointError(f"{directory}: file {name} does not match its manifest entry (corrupt or modified)")
    return manifest


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed here")


def _depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _read_structured(path: Path, kind: str) -> Any:
    """JSON, or YAML with the safe loader and the spec loader's limits; sizes capped, nesting at most MAX_DEPTH."""
    from tracetorch.builder.yaml_lines import check_node_size

    cap = SIZE_CAPS.get(path.name, SIZE_CAPS["default"])
    try:
        size = path.stat().st_size
        if size > cap:
            raise CheckpointError(f"{path}: {size:,} bytes is more than a checkpoint's {path.name} may hold ({cap:,})")
        text = path.read_text(encoding="utf-8")
        if kind == "JSON":
            strict = path.name == MANIFEST  # trainer.json may hold NaN metrics (a batch without samples)
            value = json.loads(text, parse_constant=_reject_constant) if strict else json.loads(text)
        else:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            if node is not None:
                check_node_size(node)
            value = yaml.safe_load(text)
    except RecursionError:
        raise CheckpointError(f"{path}: not valid {kind} (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not valid {kind} ({type(err).__name__}: {err})") from None
    if not _depth_ok(value):
        raise CheckpointError(f"{path}: nested more than {MAX_DEPTH} levels deep")
    return value


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (nothing is unpickled)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    try:
        weights = read_state_file(directory / "model.safetensors")
        states = read_state_file(directory / "states.safetensors")
        tensors = read_state_file(directory / "trainer.safetensors")
    except StateFileError as err:
        raise CheckpointError(str(err)) from None
    skeleton = _read_structured(directory / "trainer.json", "JSON")
    config = _read_structured(directory / "config.yaml", "YAML")
    if not isinstance(config, dict):
        raise CheckpointError(f"{directory / 'config.yaml'}: expected a mapping, got {type(config).__name__}")
    validate_trainer_state(skeleton, directory / "trainer.json")
    try:
        trainer = unpack_tree(skeleton, tensors)
    except (TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{directory / 'trainer.json'}: malformed trainer state ({err})") from None
    return Checkpoint(directory, weights, states, trainer, config, manifest)


class _Progress(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    epoch: int = Field(ge=0, le=MAX_COUNTER)
    batch: int = Field(ge=0, le=MAX_COUNTER)
    global_step: int = Field(ge=0, le=MAX_COUNTER)


class _Meter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    loss_sum: float
    correct: int = Field(ge=0)
    samples: int = Field(ge=0)
    spike_total: float
    spike_numel: int = Field(ge=0)
    seconds: float
    skipped: int = Field(0, ge=0)


Metric = Annotated[int, Strict()] | Annotated[float, Strict()] | Annotated[str, Strict()] | None


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    epoch: int = Field(ge=1)
    step: int = Field(ge=0)


class _TrainerState(BaseModel):
    model_config = ConfigDict(extra="allow")
    progress: _Progress
    meter: _Meter
    history: list[dict[str, Metric]]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any] | None
    rng: dict[str, Any]


def validate_trainer_state(skeleton: Any, path: Path) -> None:
    """Check ``trainer.json``'s structure before anything uses it: one :class:`CheckpointError` naming the field."""
    try:
        _TrainerState.model_validate(skeleton)
        for index, record in enumerate(skeleton["history"]):
            try:
                _Record.model_validate(record)
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in ("history", index, *first["loc"]))
                raise CheckpointError(f"{path}: {where}: {first['msg']}") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise CheckpointError(f"{path}: {where}: {first['msg']}") from None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(global_step, path)`` of every complete checkpoint under ``run_dir/checkpoints``, oldest first."""
    found = []
    for candidate in sorted(Path(run_dir, "checkpoints").glob("*/")):
        if candidate.name.startswith("."):
            continue
        try:
            step = int(read_manifest(candidate, verify=False).get("global_step", -1))
        except (CheckpointError, TypeError, ValueError):
            continue
        found.append((step, candidate))
    return sorted(found, key=lambda item: item[0])


def remove_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Tidy ``run_dir/checkpoints`` after a killed writer; returns the directories removed.

    A complete ``.<step>.old-<pid>`` whose ``<step>`` is missing (a kill between the two
    renames that replace a step) is renamed back: a step is never lost. Leftovers of a
    process that is still running are never touched.
    """
    from tracetorch.training.rundir import owned_by_live_process

    removed = []
    for leftover in sorted(Path(run_dir, "checkpoints").glob(".*")):
        if not leftover.is_dir() or owned_by_live_process(leftover.name, (PARTIAL, OLD, TRASH)):
            continue
        if OLD in leftover.name:
            original = leftover.parent / leftover.name[1:].rpartition(OLD)[0]
            if not original.exists():
                try:
                    read_manifest(leftover)
                    os.replace(leftover, original)
                    continue
                except CheckpointError:
                    pass
        if any(marker in leftover.name for marker in (PARTIAL, OLD, TRASH)):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints; returns the deleted ones."""
    checkpoints = list_checkpoints(run_dir)
    doomed = [path for _, path in checkpoints[: max(len(checkpoints) - keep, 0)]]
    for path in doomed:  # hidden first, so a removal cut short never leaves a broken step_* directory
        trash = path.parent / f".{path.name}{TRASH}{os.getpid()}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return doomed


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest global step under ``run_dir/checkpoints`` (None if none)."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][1] if checkpoints else None
