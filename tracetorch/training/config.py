"""The training configuration, validated once by Pydantic.

``TrainConfig.from_any`` takes a plain dict, an OmegaConf ``DictConfig`` (what Hydra
composes from ``configs/train.yaml``) or a ``TrainConfig``; unknown or ill-typed keys
are reported all at once with their dotted paths. The data, encoder and model sections
keep extra keys: they are passed on to the dataset function, the encoder and the model
builder, which check them against their own signatures.

Example:
    >>> from tracetorch.training.config import TrainConfig
    >>> cfg = TrainConfig.from_any({"trainer": {"epochs": 2}, "optim": {"lr": 0.01}})
    >>> cfg.trainer.epochs, cfg.optim.name, cfg.data.name
    (2, 'adamw', 'digits')
    >>> TrainConfig.from_any({"trainer": {"epoch": 2}})
    Traceback (most recent call last):
    ...
    ValueError: invalid training config: trainer.epoch: Extra inputs are not permitted
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["TrainConfig", "DataConfig", "EncoderConfig", "OptimConfig", "TrainerConfig"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Open):
    """``name`` (registered dataset) or ``factory`` (``pkg.mod:fn``); other keys go to it."""

    name: str | None = "digits"
    factory: str | None = None
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)


class EncoderConfig(_Open):
    """``name`` (rate, latency, direct), ``num_steps``; other keys go to the encoder."""

    name: str = "rate"
    num_steps: int = Field(20, ge=1)


class OptimConfig(_Open):
    """Optimizer, learning rate and schedule; other keys (``betas``, ``momentum``) go to the optimizer."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["cosine", "step"] | None = None
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0)
    min_lr: float = Field(0.0, ge=0)


class TrainerConfig(_Closed):
    """How to train: epochs, learning rule, readout, device, checkpoints.

    ``learning``: ``bptt`` (whole sequence), ``tbptt`` (``detach_every = k`` steps per
    backward), ``trace`` (online, no BPTT: presynaptic traces, see
    :mod:`tracetorch.online`; ``update_every`` steps per optimizer step, null: once per
    sequence). Unset, it is ``tbptt`` when ``detach_every`` is set, else ``bptt``.
    """

    epochs: int = Field(10, ge=1)
    learning: Literal["bptt", "tbptt", "trace"] | None = None
    detach_every: int | None = Field(None, ge=1)
    update_every: int | None = Field(None, ge=1)
    readout: Literal["mean", "per_step", "last"] = "mean"
    grad_clip: float | None = Field(1.0, gt=0)
    device: str = "auto"
    amp: bool = True
    resume: str | None = None
    run_dir: str | None = None
    checkpoint: bool = True
    checkpoint_every: int | None = Field(None, ge=1)
    keep_checkpoints: int | None = Field(None, ge=1)
    nan_policy: Literal["stop", "skip"] = "stop"
    plots: bool = True
    progress: bool = True
    eval_every: int = Field(1, ge=1)
    limit_train_batches: int | None = Field(None, ge=1)
    limit_test_batches: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _resolve_learning(self) -> TrainerConfig:
        if self.learning is None:
            self.learning = "bptt" if self.detach_every is None else "tbptt"
        if self.learning == "bptt" and self.detach_every is not None:
            raise ValueError("trainer.detach_every is the truncation window of learning=tbptt, not bptt")
        if self.learning == "tbptt" and self.detach_every is None:
            raise ValueError("trainer.learning=tbptt needs trainer.detach_every (steps per backward)")
        if self.learning == "trace" and self.detach_every is not None:
            raise ValueError("learning=trace detaches every step; set trainer.update_every (steps per optimizer step), "
                             "not trainer.detach_every")
        if self.learning != "trace" and self.update_every is not None:
            raise ValueError(f"trainer.update_every applies to learning=trace only (got learning={self.learning})")
        return self


class TrainConfig(_Closed):
    """The whole run: ``seed`` plus one section per config group."""

    seed: int = 0
    data: DataConfig = DataConfig()
    encoder: EncoderConfig = EncoderConfig()
    model: dict[str, Any] = Field(default_factory=dict)
    trainer: TrainerConfig = TrainerConfig()
    optim: OptimConfig = OptimConfig()

    @classmethod
    def from_any(cls, config: Any) -> TrainConfig:
        """Validate a dict, a ``DictConfig`` or a ``TrainConfig`` (Hydra's own ``hydra`` key is dropped)."""
        if isinstance(config, TrainConfig):
            return config
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(config, DictConfig):
                config = OmegaConf.to_container(config, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        if not isinstance(config, dict):
            raise TypeError(f"a training config must be a dict, DictConfig or TrainConfig, got {type(config).__name__}")
        config = {k: v for k, v in config.items() if k != "hydra"}
        try:
            return cls.model_validate(config)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            raise ValueError(f"invalid training config: {problems}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
