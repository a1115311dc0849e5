"""The training configuration, validated once by Pydantic: the only place a default lives.

``TrainConfig.from_any`` takes a plain dict, an OmegaConf ``DictConfig`` (what Hydra
composes from ``configs/train.yaml``) or a ``TrainConfig``; unknown or ill-typed keys
are reported all at once with their dotted paths. The YAML files in ``configs/`` hold only
what a choice changes; a test composes every choice through Hydra and through this schema
and checks that they agree. The data, encoder and model sections keep extra keys: they are
passed on to the dataset function, the encoder and the model builder, which check them
against their own signatures. An empty model section means the MLP of
``configs/model/mlp.yaml``.

Trust: a config passed here by the user (command line, their own files, Python) may name
callables to import (``data.factory``, ``model.factory``, ``trainer.learning=pkg.mod:Rule``).
A config read back from a checkpoint is data: :func:`check_untrusted` refuses any such key
and any ``${...}`` interpolation before it is used.

Example:
    >>> from tracetorch.training.config import TrainConfig
    >>> cfg = TrainConfig.from_any({"trainer": {"epochs": 2}, "optim": {"lr": 0.01}})
    >>> cfg.trainer.epochs, cfg.optim.name, cfg.data.name, cfg.data.batch_size, cfg.model["name"]
    (2, 'adamw', 'digits', 32, 'mlp')
    >>> TrainConfig.from_any({"trainer": {"epoch": 2}})
    Traceback (most recent call last):
    ...
    ValueError: invalid training config: trainer.epoch: Extra inputs are not permitted (did you mean 'epochs'?)
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from tracetorch.suggest import close_matches, did_you_mean

__all__ = ["schema_defaults", "TrainConfig", "DataConfig", "EncoderConfig", "OptimConfig", "TrainerConfig",
           "UntrustedConfigError", "check_untrusted", "default_model", "MODEL_DIR"]

MODEL_DIR = "model"  # the model group inside the packaged configs (tracetorch.configs)
Int = Annotated[int, Strict()]  # booleans are not integers here, as in the model builder
MAX_SEED = 2**63 - 1


@cache
def _packaged_model(name: str) -> dict[str, Any]:
    from importlib.resources import files

    return yaml.safe_load((files("tracetorch.configs") / MODEL_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def default_model() -> dict[str, Any]:
    """The model an empty ``model`` section means: ``configs/model/mlp.yaml`` (a copy)."""
    import copy

    return copy.deepcopy(_packaged_model("mlp"))


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Open):
    """``name`` (registered dataset) or ``factory`` (``pkg.mod:fn``); other keys go to it.

    ``batch_size`` is the global batch: under torchrun/srun each rank trains on its slice of it.
    """

    name: str | None = Field("digits", description="registered dataset (digits, mnist, nmnist, shd, ...)")
    factory: str | None = Field(None, description="`pkg.mod:fn` returning the dataset splits; replaces `name`")
    batch_size: Int = Field(32, ge=1, description="training batch size (global: shared out over the ranks)")
    eval_batch_size: Int = Field(512, ge=1, description="batch size when evaluating the test split")


class EncoderConfig(_Open):
    """``name`` (rate, latency, direct), ``num_steps``; other keys go to the encoder."""

    name: str = Field("rate", description="spike encoder: rate, latency, direct (or events for event data)")
    num_steps: Int = Field(20, ge=1, description="time steps per sample")


class OptimConfig(_Open):
    """Optimizer, learning rate and schedule; other keys (``betas``, ``momentum``) go to the optimizer."""

    name: Literal["adamw", "adam", "sgd"] = Field("adamw", description="the torch optimizer")
    lr: float = Field(3e-3, gt=0, description="learning rate (at the start of the schedule)")
    weight_decay: float = Field(0.01, ge=0, description="weight decay (decoupled for adamw, L2 for adam and sgd)")
    scheduler: Literal["cosine", "step"] | None = Field(
        "cosine", description="per-epoch schedule: cosine annealing to `min_lr` over the epochs, step decay, or null")
    step_size: Int = Field(10, ge=1, description="`step` schedule: epochs between decays")
    gamma: float = Field(0.1, gt=0, description="`step` schedule: factor on the learning rate at each decay")
    min_lr: float = Field(0.0, ge=0, description="`cosine` schedule: the learning rate it ends at")


LOGGERS = ("jsonl", "rich", "tensorboard", "mlflow")


class TrainerConfig(_Closed):
    """How to train: epochs, learning rule, readout, device, checkpoints, where metrics go.

    ``learning``: ``bptt`` (whole sequence), ``tbptt`` (``detach_every = k`` steps per
    backward), ``trace`` (online, no BPTT: presynaptic traces, see
    :mod:`tracetorch.online`; ``update_every`` steps per optimizer step, null: once per
    sequence), any rule registered with :func:`tracetorch.training.rules.register_rule`, or
    ``pkg.mod:Rule``. Unset, it is ``tbptt`` when ``detach_every`` is set, else ``bptt``.
    """

    epochs: Int = Field(10, ge=1, description="passes over the training split")
    learning: str | None = Field(None, description="learning rule: bptt, tbptt, trace, reflect, a registered rule or "
                                                   "`pkg.mod:Rule` (null: bptt, or tbptt with `detach_every`)")
    detach_every: Int | None = Field(None, ge=1, description="tbptt: steps per backward pass (states detached between)")
    update_every: Int | None = Field(None, ge=1, description="trace: steps per optimizer step (null: once per sequence)")
    readout: Literal["mean", "per_step", "last"] = Field(
        "mean", description="loss on the outputs: of their time average, of every step, or of the last step")
    grad_clip: float | None = Field(1.0, gt=0, description="largest gradient norm (clipped above it); null: no clipping")
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N")
    amp: bool = Field(True, description="mixed precision on CUDA (bfloat16, else float16); ignored on CPU")
    resume: str | None = Field(None, description="a checkpoint directory to continue from, or auto: the latest in `run_dir`")
    run_dir: str | None = Field(None, description="where metrics, plots and checkpoints go (tt-train: Hydra's run dir); "
                                                  "null: nothing written")
    checkpoint: bool = Field(True, description="write a checkpoint at the end of each epoch")
    checkpoint_every: Int | None = Field(None, ge=1, description="also write one every this many batches within an epoch")
    keep_checkpoints: Int | None = Field(None, ge=1, description="keep only the latest this many checkpoints; null: all")
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="on a non-finite loss: stop with an error naming the layer, or skip the batch")
    plots: bool = Field(True, description="draw the learning curves and a spike raster in the run dir")
    progress: bool = Field(True, description="progress bars in the terminal")
    loggers: list[Literal["jsonl", "rich", "tensorboard", "mlflow"]] = Field(
        default_factory=lambda: ["jsonl", "rich"], description="where metrics go: jsonl, rich, tensorboard, mlflow")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (null: an mlruns folder beside the run dir)")
    eval_every: Int = Field(1, ge=1, description="evaluate the test split every this many epochs (and after the last)")
    limit_train_batches: Int | None = Field(None, ge=1, description="at most this many training batches per epoch "
                                                                    "(quick checks)")
    limit_test_batches: Int | None = Field(None, ge=1, description="at most this many batches per evaluation")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        kind = value.split(":", 1)[0]
        if value != "auto" and kind not in ("cpu", "cuda"):
            raise ValueError(f"trainer.device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("learning")
    @classmethod
    def _known_rule(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            from tracetorch.training.rules import get_rule

            get_rule(value)
        return value

    @model_validator(mode="after")
    def _resolve_learning(self) -> TrainerConfig:
        from tracetorch.training.rules import check_rule_options

        if self.learning is None:
            self.learning = "bptt" if self.detach_every is None else "tbptt"
        check_rule_options(self)
        return self


class TrainConfig(_Closed):
    """The whole run: ``seed`` plus one section per config group."""

    seed: Int = Field(0, ge=0, le=MAX_SEED, description="seed of every random number generator of the run")
    data: DataConfig = Field(DataConfig(), description="the dataset and its batches")
    encoder: EncoderConfig = Field(EncoderConfig(), description="how samples become spike sequences")
    model: dict[str, Any] = Field(default_factory=default_model, description="a model file: `layers` and `input_shape`")
    trainer: TrainerConfig = Field(TrainerConfig(), description="how to train")
    optim: OptimConfig = Field(OptimConfig(), description="optimizer and learning-rate schedule")
    rl: dict[str, Any] | None = Field(None, description="environment, observation coding and REFLECT options "
                                                        "(trainer.learning=reflect): a tracetorch.rl.RLConfig")

    @field_validator("model")
    @classmethod
    def _model_or_default(cls, value: dict[str, Any]) -> dict[str, Any]:
        return value or default_model()

    @model_validator(mode="after")
    def _rl_section(self) -> TrainConfig:
        if self.trainer.learning == "reflect" and self.rl is None:
            raise ValueError("trainer.learning=reflect needs an rl section (environment and REFLECT options); start from "
                             "experiment=cartpole_reflect")
        return self

    @classmethod
    def from_any(cls, config: Any) -> TrainConfig:
        """Validate a dict, a ``DictConfig`` or a ``TrainConfig`` (Hydra's own ``hydra`` key is dropped)."""
        if isinstance(config, TrainConfig):
            return config
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        if not isinstance(config, dict):
            raise TypeError(f"a training config must be a dict, DictConfig or TrainConfig, got {type(config).__name__}")
        config = {k: v for k, v in config.items() if k != "hydra"}
        try:
            return cls.model_validate(config)
        except ValidationError as err:
            raise ValueError(f"invalid training config: {'; '.join(_describe(e) for e in err.errors())}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def schema_defaults(section: type[BaseModel] | None = None) -> dict[str, Any]:
    """Every key's default as written in the schema (unvalidated, so ``learning`` stays None), model section excluded.

    ``tracetorch.configs`` registers this as Hydra's base config (``tt_defaults``), so the
    YAML files hold only what a choice changes.
    """
    out: dict[str, Any] = {}
    for name, field in (section or TrainConfig).model_fields.items():
        if section is None and name == "model":
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out[name] = schema_defaults(annotation)
        else:
            out[name] = field.get_default(call_default_factory=True)
    return out


def _describe(error: Any) -> str:
    """``dotted.path: message``, with a close-match suggestion for a misspelt key."""
    loc = [str(p) for p in error["loc"]]
    text = f"{'.'.join(loc)}: {error['msg']}"
    if error["type"] == "extra_forbidden" and loc:
        section: type[BaseModel] = TrainConfig
        for part in loc[:-1]:
            field = section.model_fields.get(part)
            annotation = getattr(field, "annotation", None)
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return text
            section = annotation
        close = close_matches(loc[-1], section.model_fields, n=1)
        if close:
            text += f" ({did_you_mean(close)})"
    return text


class UntrustedConfigError(ValueError):
    """A config read from a file that may come from a stranger names code or an interpolation."""


CALLABLE_KEYS = (("data", "factory"), ("model", "factory"))


def check_untrusted(config: Any, source: str) -> None:
    """Refuse what a config read from ``source`` (a checkpoint) may not do: name callables or interpolate.

    Callables come only from the command line, the user's own config files or the
    registries; ``${...}`` (``oc.env``, any resolver, unbounded ``${a}${a}`` chains) is
    never resolved in such a config.
    """
    if not isinstance(config, dict):
        raise UntrustedConfigError(f"{source}: expected a mapping, got {type(config).__name__}")
    for section, key in CALLABLE_KEYS:
        part = config.get(section)
        if isinstance(part, dict) and part.get(key) is not None:
            raise UntrustedConfigError(
                f"{source}: {section}.{key}={part[key]!r} names code to import; a checkpoint's config may not (pass "
                f"{section}.{key}=... on the command line yourself if you trust it)")
    learning = (config.get("trainer") or {}).get("learning") if isinstance(config.get("trainer"), dict) else None
    if isinstance(learning, str) and ":" in learning:
        raise UntrustedConfigError(f"{source}: trainer.learning={learning!r} names code to import; a checkpoint's config "
                                   f"may name registered learning rules only")
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, str) and "${" in value:
            raise UntrustedConfigError(f"{source}: {path} holds an interpolation ({value[:60]!r}); a checkpoint's config "
                                       f"is never resolved")
