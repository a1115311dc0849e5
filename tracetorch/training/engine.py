"""The training engine: epochs of BPTT or truncated/online BPTT, evaluation, checkpoints.

Usable from Python without Hydra::

    from tracetorch.training import train
    summary = train({"data": {"name": "digits"}, "model": {...}, "trainer": {"epochs": 5, "run_dir": "runs/a"}})

or with your own model: ``Trainer(config, model=my_model).fit()``.

One batch: the data gives ``x`` (``[B, ...]`` images, or ``[T, B, ...]`` sequences that
skip the encoder); the encoder makes ``[T, B, ...]``; then either

* full BPTT (``trainer.detach_every`` unset): ``model.run(x_seq)`` on the whole sequence,
  one loss, one optimizer step; or
* online / truncated BPTT (``detach_every = k``): the model is stepped (``model(x_t)``);
  every ``k`` steps the chunk's loss is backpropagated, the optimizer steps and the
  hidden states are detached, so the autograd graph never spans more than ``k`` steps.

Reproducibility: the sample order of epoch ``e`` and the encoder's randomness for batch
``b`` come from generators seeded by ``(seed, e, b)``; global RNG states are saved in
every checkpoint. So a run stopped after any batch and resumed from its checkpoint ends
bit-identical to one that never stopped (on the same device).
"""

from __future__ import annotations

import inspect
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tracetorch.core.model import iter_layers
from tracetorch.core.sequence import run as run_sequence
from tracetorch.data.datasets import load_dataset
from tracetorch.data.encoders import Encoder, make_encoder
from tracetorch.data.registry import call_with_checked_kwargs, import_callable
from tracetorch.data.splits import Part, Splits
from tracetorch.online.trace import enable_trace_learning
from tracetorch.training.checkpoint import (
    CheckpointError,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    load_model_states,
    restore_rng,
    save_checkpoint,
)
from tracetorch.training.config import TrainConfig
from tracetorch.training.metrics import Meter, SpikeMonitor, write_jsonl
from tracetorch.training.readout import get_readout

__all__ = [
    "Trainer", "train", "evaluate_checkpoint", "build_model", "resolve_device", "seed_everything", "derive_seed", "Interrupted",
]

STREAM_ORDER, STREAM_TRAIN, STREAM_TEST, STREAM_PLOT = 0, 1, 2, 3


class Interrupted(Exception):
    """Training stopped by Ctrl-C after a checkpoint was written (``.checkpoint`` says where)."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"training interrupted; checkpoint: {checkpoint}")
        self.checkpoint = checkpoint


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"trainer.device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return device


def build_model(model_config: dict[str, Any], splits: Splits) -> nn.Module:
    """Build the model a config describes, with ``input_shape`` taken from the dataset.

    ``factory: pkg.mod:fn`` calls ``fn(input_shape=..., num_classes=..., **rest)``;
    anything else is a model spec for :func:`tracetorch.build_model`.
    """
    import tracetorch

    spec = dict(model_config)
    if not spec:
        raise ValueError("the model config is empty; choose one, e.g. model=mlp, or pass model= to Trainer")
    factory = spec.pop("factory", None)
    spec["input_shape"] = list(splits.input_shape)
    if factory:
        kwargs = {**spec, "num_classes": splits.num_classes}
        return call_with_checked_kwargs(import_callable(factory), kwargs, f"model factory {factory!r}")
    builder = getattr(tracetorch, "build_model", None)
    if builder is None:
        raise ValueError("tracetorch.build_model is not available in this installation; pass a model or a model.factory")
    return builder(spec)


def _zero_states(model: nn.Module) -> None:
    for _, layer in iter_layers(model):
        layer.zero_states()


def _detach_states(model: nn.Module) -> None:
    for _, layer in iter_layers(model):
        layer.detach_states()


@contextmanager
def _sigint_to_flag(flag: dict[str, bool]) -> Iterator[None]:
    """First Ctrl-C sets ``flag['stop']`` (the loop checkpoints and stops); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.get("stop"):
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Trainer:
    """Train and evaluate a spiking model on a :class:`Splits` dataset.

    Args:
        config: a dict / ``DictConfig`` / :class:`TrainConfig` (see ``configs/train.yaml``).
        model: a ready model (otherwise built from ``config['model']``).
        splits: a ready dataset (otherwise loaded from ``config['data']``).

    Progress goes to the optional ``progress`` argument of :meth:`fit` (see
    :class:`tracetorch.training.progress.RichProgress`).
    """

    def __init__(self, config: Any, model: nn.Module | None = None, splits: Splits | None = None) -> None:
        self.config = TrainConfig.from_any(config)
        cfg = self.config
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.trainer.device)
        self.splits = splits if splits is not None else load_dataset(cfg.data.model_dump())
        self.encoder: Encoder | None = None if self.splits.sequence else make_encoder(cfg.encoder.model_dump())
        self.num_steps = self.splits.num_steps if self.splits.sequence else self.encoder.num_steps  # type: ignore[union-attr]
        self.model = (model if model is not None else build_model(cfg.model, self.splits)).to(self.device)
        if cfg.trainer.learning == "trace":
            enable_trace_learning(self.model)
        self._check_output()
        self.readout = get_readout(cfg.trainer.readout)
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.run_dir = Path(cfg.trainer.run_dir) if cfg.trainer.run_dir else None
        self.epoch = 0  # epochs completed
        self.batch = 0  # batches completed within the current epoch
        self.global_step = 0  # optimizer steps
        self.history: list[dict[str, Any]] = []
        self.meter = Meter()
        self._stop = {"stop": False}
        if cfg.trainer.resume:
            self.resume(cfg.trainer.resume)

    # ---- construction -----------------------------------------------------------

    def _check_output(self) -> None:
        x = torch.zeros(1, *self.splits.input_shape, device=self.device)
        with torch.no_grad():
            _zero_states(self.model)
            try:
                out = self.model(x)
            except Exception as err:
                raise ValueError(
                    f"the model does not accept one step of the dataset ({self.splits.name}: input_shape "
                    f"{list(self.splits.input_shape)}): {type(err).__name__}: {err}"
                ) from err
            _zero_states(self.model)
        if out.ndim != 2 or out.shape[-1] != self.splits.num_classes:
            raise ValueError(
                f"the model outputs shape {list(out.shape[1:])} per sample but dataset {self.splits.name!r} has "
                f"{self.splits.num_classes} classes; make the last layer output {self.splits.num_classes} values"
            )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[o.name]
        kwargs = {"lr": o.lr, "weight_decay": o.weight_decay, **(o.model_extra or {})}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        accepted = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "params")]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"optim.{unknown[0]}: not an option of {cls.__name__} (accepted: {', '.join(accepted)})")
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        return cls(params, **kwargs)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        o = self.config.optim
        if o.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.config.trainer.epochs, eta_min=o.min_lr)
        if o.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=o.step_size, gamma=o.gamma)
        return None

    def _amp_dtype(self) -> torch.dtype | None:
        if not self.config.trainer.amp or self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _autocast(self):  # type: ignore[no-untyped-def]
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # ---- data -----------------------------------------------------------------------

    def _generator(self, *keys: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.config.seed, *keys))
        return gen

    def num_batches(self, part: Part, batch_size: int, limit: int | None) -> int:
        n = math.ceil(len(part) / batch_size)
        return min(n, limit) if limit else n

    def _inputs(self, part: Part, index: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = self.splits.batch(part, index, self.device)
        if self.encoder is not None:
            x = self.encoder(x, gen)
        return x, y

    def _order(self, epoch: int) -> Tensor:
        gen = torch.Generator().manual_seed(derive_seed(self.config.seed, STREAM_ORDER, epoch))
        return torch.randperm(len(self.splits.train), generator=gen)

    # ---- one batch -----------------------------------------------------------------

    def _step(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        self._update()

    def _backward(self, loss: Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def _update(self) -> None:
        """Clip and apply the accumulated gradient, then clear it."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.trainer.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.trainer.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

    def train_batch(self, x_seq: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One batch of training; returns the detached output ``[T, B, C]`` and its loss."""
        k = self.config.trainer.detach_every
        _zero_states(self.model)
        if self.config.trainer.learning == "trace":
            return self._train_batch_trace(x_seq, y)
        if k is None:
            with self._autocast():
                out = run_sequence(self.model, x_seq)
            loss = self.readout.loss(out.float(), y)
            self._step(loss)
            return out.detach().float(), loss.detach()
        steps = x_seq.shape[0]
        outs = []
        for start in range(0, steps, k):
            with self._autocast():
                chunk = torch.stack([self.model(x_t) for x_t in x_seq[start : start + k].unbind(0)])
            loss = self.readout.chunk_loss(chunk.float(), y, start, steps)
            if loss is not None:
                self._step(loss)
            _detach_states(self.model)
            outs.append(chunk.detach().float())
        out = torch.cat(outs)
        return out, self.readout.loss(out, y)

    def _train_batch_trace(self, x_seq: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Online (OTTT): per step forward, backward of the step's loss, detach; update every ``update_every`` steps."""
        steps = x_seq.shape[0]
        k = self.config.trainer.update_every or steps
        self.optimizer.zero_grad(set_to_none=True)
        outs, pending = [], False
        for t, x_t in enumerate(x_seq.unbind(0)):
            with self._autocast():
                out_t = self.model(x_t)
            loss = self.readout.chunk_loss(out_t.unsqueeze(0).float(), y, t, steps)
            if loss is not None:
                self._backward(loss)
                pending = True
            _detach_states(self.model)
            outs.append(out_t.detach().float())
            if pending and ((t + 1) % k == 0 or t == steps - 1):
                self._update()
                pending = False
        out = torch.stack(outs)
        return out, self.readout.loss(out, y)

    # ---- epochs --------------------------------------------------------------------

    def train_epoch(self, progress: Any = None) -> dict[str, Any]:
        """Train the next epoch from batch ``self.batch`` on; returns its record (also appended to history)."""
        cfg = self.config
        epoch = self.epoch
        self.model.train()
        order = self._order(epoch)
        bs = cfg.data.batch_size
        total = self.num_batches(self.splits.train, bs, cfg.trainer.limit_train_batches)
        if progress is not None:
            progress.start_batches(f"epoch {epoch + 1}", total, self.batch)
        with SpikeMonitor(self.model) as monitor:
            while self.batch < total:
                if self._stop["stop"]:
                    raise KeyboardInterrupt
                start_time = time.perf_counter()
                index = order[self.batch * bs : (self.batch + 1) * bs]
                x, y = self._inputs(self.splits.train, index, self._generator(STREAM_TRAIN, epoch, self.batch))
                monitor.reset()
                out, loss = self.train_batch(x, y)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.meter.add(float(loss), self.readout.correct(out, y), len(y))
                self.meter.spike_total += monitor.total
                self.meter.spike_numel += monitor.numel
                self.meter.seconds += time.perf_counter() - start_time
                self.batch += 1
                if progress is not None:
                    progress.update_batch(self.meter)
        record = self._finish_epoch()
        if progress is not None:
            progress.end_epoch(record)
        return record

    def _finish_epoch(self) -> dict[str, Any]:
        done, every = self.epoch + 1, self.config.trainer.eval_every
        skip = {"loss": None, "accuracy": None, "spike_rate": None}
        test = self.evaluate() if done % every == 0 or done == self.config.trainer.epochs else skip
        m = self.meter
        record = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": m.loss,
            "train_accuracy": m.accuracy,
            "spike_rate": m.spike_rate,
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "test_spike_rate": test["spike_rate"],
            "samples_per_s": m.samples_per_s,
            "epoch_seconds": m.seconds,
        }
        if self.scheduler is not None:
            self.scheduler.step()
        self.history.append(record)
        self.epoch += 1
        self.batch = 0
        self.meter = Meter()
        return record

    @torch.no_grad()
    def evaluate(self, part: Part | None = None) -> dict[str, float]:
        """Loss, accuracy and spike rate on ``part`` (default: the test split); deterministic encoding."""
        part = self.splits.test if part is None else part
        was_training = self.model.training
        self.model.eval()
        meter = Meter()
        bs = self.config.data.eval_batch_size
        total = self.num_batches(part, bs, self.config.trainer.limit_test_batches)
        start_time = time.perf_counter()
        with SpikeMonitor(self.model) as monitor:
            for b in range(total):
                index = torch.arange(b * bs, min((b + 1) * bs, len(part)))
                x, y = self._inputs(part, index, self._generator(STREAM_TEST, b))
                _zero_states(self.model)
                with self._autocast():
                    out = run_sequence(self.model, x).float()
                meter.add(float(self.readout.loss(out, y)), self.readout.correct(out, y), len(y))
        meter.seconds = time.perf_counter() - start_time
        self.model.train(was_training)
        return {"loss": meter.loss, "accuracy": meter.accuracy, "spike_rate": monitor.rate(), "samples": meter.samples,
                "samples_per_s": meter.samples_per_s}

    def fit(self, progress: Any = None) -> dict[str, Any]:
        """Train until ``trainer.epochs``; checkpoint and write metrics after each epoch.

        Ctrl-C stops after the current batch with a checkpoint (raises :class:`Interrupted`).
        Returns :meth:`summary`.
        """
        with _sigint_to_flag(self._stop):
            try:
                while self.epoch < self.config.trainer.epochs:
                    self.train_epoch(progress)
                    self.save_outputs()
            except KeyboardInterrupt:
                path = self.save_checkpoint() if self.run_dir is not None and self.config.trainer.checkpoint else None
                raise Interrupted(path) from None
        if self.run_dir is not None and self.config.trainer.plots:
            self.plot()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Final and best metrics of the run so far."""
        if not self.history:
            return {"epochs": 0}
        evaluated = [r for r in self.history if r["test_accuracy"] is not None] or self.history
        best = max(evaluated, key=lambda r: r["test_accuracy"] or 0.0)
        last = self.history[-1]
        return {
            "epochs": last["epoch"],
            "steps": last["step"],
            "train_loss": last["train_loss"],
            "train_accuracy": last["train_accuracy"],
            "test_loss": last["test_loss"],
            "test_accuracy": last["test_accuracy"],
            "best_test_accuracy": best["test_accuracy"],
            "best_epoch": best["epoch"],
            "spike_rate": last["spike_rate"],
            "samples_per_s": sum(r["samples_per_s"] for r in self.history) / len(self.history),
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }

    # ---- outputs -------------------------------------------------------------------

    def save_outputs(self) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.run_dir / "metrics.jsonl", self.history)
        if self.config.trainer.checkpoint:
            self.save_checkpoint()

    def plot(self) -> None:
        """``curves.png`` (loss/accuracy) and ``raster.png`` (one test sample) in the run dir."""
        from tracetorch.training.plots import plot_curves, plot_raster, record_sample

        assert self.run_dir is not None
        if self.history:
            plot_curves(self.history, self.run_dir / "curves.png")
        x, y = self._inputs(self.splits.test, torch.arange(1), self._generator(STREAM_PLOT))
        was_training = self.model.training
        self.model.eval()
        _zero_states(self.model)
        spikes, membrane = record_sample(self.model, x)
        _zero_states(self.model)
        self.model.train(was_training)
        plot_raster(spikes, membrane, self.run_dir / "raster.png", title=f"test sample 0 (label {int(y[0])})")

    # ---- checkpoints ---------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        return {
            "progress": {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step},
            "meter": self.meter.to_dict(),
            "history": self.history,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng(),
        }

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Write a checkpoint (default ``<run_dir>/checkpoints/step_<global step>``)."""
        if directory is None:
            if self.run_dir is None:
                raise ValueError("save_checkpoint needs a directory when trainer.run_dir is not set")
            directory = self.run_dir / "checkpoints" / f"step_{self.global_step:08d}"
        info = {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step}
        return save_checkpoint(directory, model=self.model, trainer_state=self.trainer_state(),
                               config=self.config.to_dict(), info=info)

    def resume(self, where: str | Path) -> Path:
        """Continue from a checkpoint directory, or ``auto``: the latest one in the run dir."""
        if str(where) == "auto":
            if self.run_dir is None:
                raise CheckpointError("trainer.resume=auto needs trainer.run_dir (the run to continue)")
            found = latest_checkpoint(self.run_dir)
            if found is None:
                raise CheckpointError(
                    f"trainer.resume=auto: no complete checkpoint under {self.run_dir / 'checkpoints'} (auto looks in this "
                    f"run's own directory: rerun with hydra.run.dir=<that run's dir>, or give trainer.resume=<checkpoint dir>)"
                )
            where = found
        ckpt = load_checkpoint(where)
        try:
            self.model.load_state_dict({k: v.to(self.device) for k, v in ckpt.weights.items()})
        except RuntimeError as err:
            raise CheckpointError(f"{where}: the weights do not fit this model: {err}") from None
        load_model_states(self.model, ckpt.states)
        state = ckpt.trainer
        self.optimizer.load_state_dict(state["optimizer"])
        if (state["scheduler"] is None) != (self.scheduler is None):
            raise CheckpointError(f"{where}: optim.scheduler differs from the checkpoint's run")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        progress = state["progress"]
        self.epoch, self.batch, self.global_step = progress["epoch"], progress["batch"], progress["global_step"]
        self.history = list(state["history"])
        self.meter = Meter.from_dict(state["meter"])
        restore_rng(state["rng"])
        return Path(where)


def train(config: Any, model: nn.Module | None = None, splits: Splits | None = None, progress: Any = None) -> dict[str, Any]:
    """Build a :class:`Trainer` from ``config`` and :meth:`Trainer.fit` it; returns the summary."""
    return Trainer(config, model=model, splits=splits).fit(progress)


def evaluate_checkpoint(
    path: str | Path, overrides: dict[str, Any] | None = None, model: nn.Module | None = None, split: str = "test"
) -> dict[str, Any]:
    """Load a checkpoint (its config, weights, hidden states) and evaluate it on ``split``.

    ``overrides`` are nested config updates, e.g. ``{"data": {"root": "/data"}, "trainer": {"device": "cpu"}}``.
    """
    from omegaconf import OmegaConf

    ckpt = load_checkpoint(path)
    config = OmegaConf.merge(OmegaConf.create(ckpt.config), OmegaConf.create(overrides or {}))
    config = OmegaConf.to_container(config, resolve=True)
    config["trainer"].update(resume=None, run_dir=None)
    trainer = Trainer(config, model=model)
    try:
        trainer.model.load_state_dict({k: v.to(trainer.device) for k, v in ckpt.weights.items()})
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit the model its config builds: {err}") from None
    load_model_states(trainer.model, ckpt.states)
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    result = trainer.evaluate(trainer.splits.test if split == "test" else trainer.splits.train)
    return {"checkpoint": str(path), "split": split, "epoch": ckpt.manifest.get("epoch"),
            "global_step": ckpt.manifest.get("global_step"), **result}
