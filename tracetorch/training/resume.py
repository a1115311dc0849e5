"""Continuing, evaluating and loading trained runs from checkpoints.

* :func:`resume` restores a :class:`~tracetorch.training.loop.Trainer` (weights, hidden
  states, optimizer, schedule, RNG, progress, history). Settings changed on the command
  line since the checkpoint are applied, not ignored: a new ``optim.lr`` (or weight decay,
  betas, momentum) replaces the checkpoint's, keeping the schedule's progress, and a new
  ``trainer.epochs`` stretches the cosine schedule to end there. What was applied is logged.
* :func:`evaluate_checkpoint` rebuilds a checkpoint's dataset and model and evaluates it.
* :func:`load_trained` is the one-liner for inference: ``tt.load_trained("runs/a")``.

A checkpoint's config is data from whoever wrote the files: it is checked by
:func:`~tracetorch.training.config.check_untrusted` (no callables, no interpolations)
before anything uses it; callables may come only from the caller's own overrides.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tracetorch.training import checkpoint as ckpt_files
from tracetorch.training.checkpoint import Checkpoint, CheckpointError
from tracetorch.training.config import CALLABLE_KEYS, check_untrusted
from tracetorch.training.faults import config_differences, restore_states, snapshot_states
from tracetorch.training.metrics import Meter

__all__ = ["resume", "find_checkpoint", "evaluate_checkpoint", "load_trained", "load_weights", "trusted_config"]

log = logging.getLogger("tracetorch.training")


def find_checkpoint(where: str | Path, best: bool = False) -> Path:
    """A checkpoint directory, or the latest (``best``: highest test accuracy) complete one of a run dir."""
    path = Path(where)
    if (path / ckpt_files.MANIFEST).is_file() or not (path / "checkpoints").is_dir():
        if path.is_dir() and not (path / ckpt_files.MANIFEST).exists() and not path.name.startswith("step_"):
            raise CheckpointError(f"{path}: neither a checkpoint (a step_* folder with manifest.json) nor a run dir (a "
                                  f"folder with checkpoints/ inside)")
        return path
    found = ckpt_files.list_checkpoints(path)
    if not found:
        raise CheckpointError(f"{path}: a run dir without a complete checkpoint under checkpoints/")
    if not best:
        return found[-1][1]
    scored = []
    for _, candidate in found:
        history = ckpt_files.load_checkpoint(candidate).trainer["history"]
        accuracies = [r.get("test_accuracy") for r in history if isinstance(r.get("test_accuracy"), float)]
        scored.append((accuracies[-1] if accuracies else -1.0, candidate))
    return max(scored, key=lambda item: item[0])[1]


def resume(trainer: Any, where: str | Path) -> Path | None:
    """Continue ``trainer`` from a checkpoint, or ``auto``: the latest in its run dir (none yet: a fresh start)."""
    if str(where) == "auto":
        if trainer.run_dir is None:
            raise CheckpointError("trainer.resume=auto needs trainer.run_dir (the run to continue)")
        found = ckpt_files.latest_checkpoint(trainer.run_dir)
        if found is None:
            log.info("trainer.resume=auto: no checkpoint in %s yet; starting a fresh run", trainer.run_dir)
            return None
        where = found
    ckpt = ckpt_files.load_checkpoint(where)  # its config only explains differences; nothing in it is imported or resolved
    config = trainer.saved_config()  # as a checkpoint records it: differences are about what was built
    load_weights(trainer.model, ckpt, config, trainer.device)
    state = ckpt.trainer
    saved_optim = (ckpt.config.get("optim") or {}).get("name")
    if saved_optim is not None and saved_optim != trainer.config.optim.name:
        raise CheckpointError(f"{where}: the checkpoint's run used optim.name={saved_optim} but this run uses "
                              f"{trainer.config.optim.name}; resume with the same optimizer")
    if (state["scheduler"] is None) != (trainer.scheduler is None):
        raise CheckpointError(f"{where}: optim.scheduler differs from the checkpoint's run")
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.scheduler is not None:
            trainer.scheduler.load_state_dict(state["scheduler"])
        if trainer.scaler is not None and state["scaler"] is not None:
            trainer.scaler.load_state_dict(state["scaler"])
        progress = state["progress"]
        trainer.epoch, trainer.batch, trainer.global_step = progress["epoch"], progress["batch"], progress["global_step"]
        trainer.history = list(state["history"])
        trainer.meter = Meter.from_dict(state["meter"])
        ckpt_files.restore_rng(state["rng"])
        trainer.world.on_resume(trainer, state)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
        raise CheckpointError(f"{where}: the trainer state does not fit this run ({type(err).__name__}: {err}); "
                              f"optim differs from the checkpoint's run: {_differences(ckpt, config, 'optim')}") from None
    applied = _apply_changed_settings(trainer, ckpt.config)
    log.info("resumed from %s (epoch %d, batch %d, step %d)%s", where, trainer.epoch, trainer.batch, trainer.global_step,
             f"; applied changed settings: {'; '.join(applied)}" if applied else "")
    return Path(where)


def _apply_changed_settings(trainer: Any, saved: dict[str, Any]) -> list[str]:
    """Put this run's optimizer and schedule settings in place of the checkpoint's where they differ."""
    optim, applied = trainer.config.optim, []
    old = saved.get("optim") or {}
    hyper = {"weight_decay": optim.weight_decay, **(optim.model_extra or {})}
    for group in trainer.optimizer.param_groups:
        base = group.get("initial_lr", group["lr"])
        if optim.lr != base:
            group["lr"] = optim.lr * (group["lr"] / base) if base else optim.lr
            if "initial_lr" in group:
                group["initial_lr"] = optim.lr
        for key, value in hyper.items():
            value = tuple(value) if key == "betas" else value
            if key in group and group[key] != value:
                group[key] = value
    applied += [f"optim.{k}: {old.get(k)} -> {v}" for k, v in {"lr": optim.lr, **hyper}.items()
                if k in old and old.get(k) != (list(v) if isinstance(v, tuple) else v)]
    scheduler = trainer.scheduler
    if scheduler is not None:
        scheduler.base_lrs = [optim.lr] * len(scheduler.base_lrs)
        wanted = {"T_max": trainer.config.trainer.epochs, "eta_min": optim.min_lr, "step_size": optim.step_size,
                  "gamma": optim.gamma}
        for key, value in wanted.items():
            if hasattr(scheduler, key) and getattr(scheduler, key) != value:
                applied.append(f"schedule {key}: {getattr(scheduler, key)} -> {value}")
                setattr(scheduler, key, value)
    return applied


def _differences(ckpt: Checkpoint, config: dict[str, Any], *sections: str) -> str:
    diffs = [d for section in sections for d in config_differences(ckpt.config.get(section), config.get(section), section)]
    return "; ".join(diffs) if diffs else "no differences in " + ", ".join(sections)


def load_weights(model: nn.Module, ckpt: Checkpoint, config: dict[str, Any], device: torch.device) -> None:
    """Load a checkpoint's weights and hidden states into ``model``, or raise one :class:`CheckpointError` listing
    every mismatch (missing, unexpected, wrong shapes, plus the config keys that differ). Nothing changes on failure."""
    own = model.state_dict()
    missing = sorted(set(own) - set(ckpt.weights))
    unexpected = sorted(set(ckpt.weights) - set(own))
    shapes = [f"{k} {list(ckpt.weights[k].shape)} in the checkpoint vs {list(v.shape)} in the model"
              for k, v in own.items() if k in ckpt.weights and ckpt.weights[k].shape != v.shape]
    problems = ([f"missing weights: {', '.join(missing)}"] if missing else []) + (
        [f"unexpected weights: {', '.join(unexpected)}"] if unexpected else []) + (
        [f"wrong shapes: {', '.join(shapes)}"] if shapes else [])
    if problems:
        raise CheckpointError(
            f"{ckpt.path}: the checkpoint does not fit this model: {'; '.join(problems)} (config differences, checkpoint "
            f"vs this run: {_differences(ckpt, config, 'model', 'data')})"
        )
    before = snapshot_states(model)
    try:
        ckpt_files.load_model_states(model, ckpt.states)
    except ValueError as err:
        restore_states(before)
        raise CheckpointError(f"{ckpt.path}: the checkpoint's hidden states do not fit this model: {err}") from None
    model.load_state_dict({k: v.to(device) for k, v in ckpt.weights.items()})


def _overridden_keys(overrides: dict[str, Any] | list[str] | None) -> set[str]:
    if isinstance(overrides, (list, tuple)):
        return {str(o).partition("=")[0].lstrip("+~") for o in overrides}
    out: set[str] = set()
    for section, value in (overrides or {}).items():
        out |= {f"{section}.{k}" for k in value} if isinstance(value, dict) else {section}
    return out


def trusted_config(ckpt: Checkpoint, overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """The checkpoint's config with callables the caller names themselves taken from the caller, checked."""
    import copy

    config = copy.deepcopy(ckpt.config)
    keys = _overridden_keys(overrides)
    for section, key in CALLABLE_KEYS:
        if f"{section}.{key}" in keys and isinstance(config.get(section), dict):
            config[section].pop(key, None)
    trainer = config.get("trainer")
    if isinstance(trainer, dict) and ":" in str(trainer.get("learning")) and "trainer.learning" not in keys:
        trainer.update(learning="bptt", detach_every=None, update_every=None)  # evaluation trains nothing: no rule to import
    check_untrusted(config, str(ckpt.path / "config.yaml"))
    return config


def _apply_overrides(config: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Nested dict updates, or ``key=value`` strings (dotted keys, list indices allowed); errors are ``ValueError``."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.create(config)
        if isinstance(overrides, (list, tuple)):
            for item in overrides:
                key, sep, raw = str(item).partition("=")
                if not sep or not key:
                    raise ValueError(f"override {item!r}: expected key=value")
                value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]))["value"]
                OmegaConf.update(cfg, key, value, merge=True)
        elif overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - OmegaConf's errors (type clashes, interpolations) are config errors
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ValueError(f"cannot apply the overrides {overrides!r}: {message}") from None


def _trainer_for(path: str | Path, overrides: dict[str, Any] | list[str] | None, model: nn.Module | None,
                 best: bool = False) -> tuple[Any, Checkpoint]:
    from tracetorch.training.loop import Trainer

    ckpt = ckpt_files.load_checkpoint(find_checkpoint(path, best))
    config = _apply_overrides(trusted_config(ckpt, overrides), overrides)
    config["trainer"].update(resume=None, run_dir=None, loggers=[])
    trainer = Trainer(config, model=model)
    load_weights(trainer.model, ckpt, trainer.saved_config(), trainer.device)
    return trainer, ckpt


def evaluate_checkpoint(
    path: str | Path, overrides: dict[str, Any] | list[str] | None = None, model: nn.Module | None = None,
    split: str = "test", best: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint (or a run dir's latest / ``best``) and evaluate it on ``split``.

    ``overrides`` are nested config updates, e.g. ``{"data": {"root": "/data"}, "trainer": {"device": "cpu"}}``,
    or ``key=value`` strings such as ``["data.root=/data", "trainer.device=cpu"]``.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    trainer, ckpt = _trainer_for(path, overrides, model, best)
    result = trainer.evaluate(trainer.splits.test if split == "test" else trainer.splits.train)
    return {"checkpoint": str(ckpt.path), "split": split, "epoch": ckpt.manifest.get("epoch"),
            "global_step": ckpt.manifest.get("global_step"), **result}


def load_trained(path: str | Path, best: bool = False, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a run dir (its latest checkpoint, or ``best``) or of one checkpoint, ready for inference.

    Built from the checkpoint's recorded model spec (what was really built), weights and
    hidden states loaded, in ``eval()`` mode; no dataset is loaded.

    Example::

        model = tt.load_trained("outputs/2026-12-02/10-00-00")
        model.zero_states(); logits = model.run(x_seq).mean(0)
    """
    import tracetorch

    ckpt = ckpt_files.load_checkpoint(find_checkpoint(path, best))
    config = trusted_config(ckpt, None)
    spec = config.get("model")
    if not isinstance(spec, dict) or "layers" not in spec:
        raise CheckpointError(f"{ckpt.path / 'config.yaml'}: the checkpoint records no model spec (a model from a "
                              f"factory or your own class): build it yourself and load {ckpt.path / 'model.safetensors'}")
    model = tracetorch.build_model(spec)
    load_weights(model, ckpt, config, torch.device(device))
    return model.to(device).eval()
