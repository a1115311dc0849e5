"""Setting a run up from its config: seeds, device, model, optimizer, scheduler, mixed precision.

Each function takes the validated :class:`~tracetorch.training.config.TrainConfig` section it
needs and returns one object; :class:`~tracetorch.training.loop.Trainer` calls them in order.

Example:
    >>> import torch
    >>> from tracetorch.training.setup import derive_seed, resolve_device
    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2)
    True
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import inspect
import random
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from tracetorch.data.registry import call_with_checked_kwargs, import_callable
from tracetorch.data.splits import Splits
from tracetorch.training.config import OptimConfig, TrainConfig

__all__ = ["derive_seed", "seed_everything", "resolve_device", "model_from_config", "make_optimizer", "make_scheduler",
           "amp_dtype", "autocast_context", "check_model_output"]

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"trainer.device: {err}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"trainer.device={name!r}: training runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return device


def model_from_config(model_config: dict[str, Any], splits: Splits) -> nn.Module:
    """The model a config's ``model`` section describes, for the dataset's input shape.

    ``factory: pkg.mod:fn`` calls ``fn(input_shape=..., num_classes=..., **rest)``;
    ``file: path.yaml`` loads a model file; anything else is a model spec for
    :func:`tracetorch.build_model`. A spec's own ``input_shape`` must match the data's.
    """
    import tracetorch
    from tracetorch.builder.build import declared_input_shape

    spec = dict(model_config)
    factory = spec.pop("factory", None)
    if factory:
        kwargs = {**spec, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes}
        return call_with_checked_kwargs(import_callable(factory), kwargs, f"model factory {factory!r}")
    source: Any = spec.pop("file", None) or spec
    given = declared_input_shape(source)
    if given is not None and list(given) != list(splits.input_shape):
        where = source if isinstance(source, str) else "model.input_shape"
        raise ValueError(f"{where}: input_shape {list(given)} does not match the data ({splits.name}: input_shape "
                         f"{list(splits.input_shape)}); leave input_shape out of model configs: the data sets it")
    return tracetorch.build_model(source, input_shape=list(splits.input_shape))


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``optim.name`` over the model's trainable parameters; extra keys are checked against it."""
    cls = OPTIMIZERS[optim.name]
    kwargs = {"lr": optim.lr, "weight_decay": optim.weight_decay, **(optim.model_extra or {})}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    accepted = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "params")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"optim.{unknown[0]}: not an option of {cls.__name__} (accepted: {', '.join(accepted)})")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return cls(params, **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule (``optim.scheduler``), or None."""
    o = config.optim
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.trainer.epochs, eta_min=o.min_lr)
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.step_size, gamma=o.gamma)
    return None


def amp_dtype(enabled: bool, device: torch.device) -> torch.dtype | None:
    """bf16 (or fp16 where bf16 is missing) autocast on CUDA when ``enabled``; None on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    return nullcontext() if dtype is None else torch.autocast(device_type="cuda", dtype=dtype)


def check_model_output(model: nn.Module, splits: Splits, device: torch.device) -> None:
    """One step of one sample through ``model`` (in eval mode): it must accept the data and output one value per class."""
    from tracetorch.core.model import iter_layers

    x = torch.zeros(1, *splits.input_shape, device=device)
    layers = [layer for _, layer in iter_layers(model)]
    was_training = model.training
    model.eval()  # one sample: BatchNorm cannot use batch statistics (a 1x1 map of a ResNet's last stage)
    with torch.no_grad():
        for layer in layers:
            layer.zero_states()
        try:
            out = model(x)
        except Exception as err:
            raise ValueError(f"the model does not accept one step of the dataset ({splits.name}: input_shape "
                             f"{list(splits.input_shape)}): {type(err).__name__}: {err}") from err
        finally:
            for layer in layers:
                layer.zero_states()
            model.train(was_training)
    if out.ndim != 2 or out.shape[-1] != splits.num_classes:
        raise ValueError(f"the model outputs shape {list(out.shape[1:])} per sample but dataset {splits.name!r} has "
                         f"{splits.num_classes} classes; make the last layer output {splits.num_classes} values")
