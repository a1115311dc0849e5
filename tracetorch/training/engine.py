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

Faults: ``trainer.checkpoint_every`` adds mid-epoch checkpoints (written all at once, see
:mod:`tracetorch.training.checkpoint`), so a killed job loses at most that many batches.
A NaN/inf loss or gradient stops training with :class:`NonFiniteError` naming the step
and the first layer whose output went non-finite, before the optimizer applies it
(``trainer.nan_policy=skip`` drops such batches instead and counts them in
``skipped_batches``). A run dir that cannot be written (disk full, permissions) raises
:class:`RunDirError`; earlier checkpoints stay intact.
"""

from __future__ import annotations

import inspect
import math
import os
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
    Checkpoint,
    CheckpointError,
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    load_model_states,
    prune_checkpoints,
    remove_partial_checkpoints,
    restore_rng,
    save_checkpoint,
)
from tracetorch.training.config import TrainConfig
from tracetorch.training.faults import (
    NonFiniteError,
    RunDirError,
    config_differences,
    locate_non_finite,
    restore_states,
    snapshot_states,
)
from tracetorch.training.metrics import Meter, SpikeMonitor, write_jsonl
from tracetorch.training.readout import get_readout

__all__ = [
    "Trainer", "train", "evaluate_checkpoint", "build_model", "resolve_device", "seed_everything", "derive_seed", "Interrupted",
    "NonFiniteError", "RunDirError",
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
        self._replay: tuple[Tensor, int, list | None] = (torch.zeros(0), 0, None)
        if cfg.trainer.resume:
            self.resume(cfg.trainer.resume)
        if self.run_dir is not None:
            self._prepare_run_dir()

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

    def _step(self, loss: Tensor) -> bool:
        """Backward + optimizer step; False (nothing applied) when ``nan_policy=skip`` meets a non-finite value.

        ``self._replay`` = ``(x_seq, first timestep, states snapshot)`` of the loss, for the diagnosis.
        """
        if not torch.isfinite(loss.detach()).all():
            return self._non_finite(f"loss ({float(loss.detach()):g})", *self._replay)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        return self._update()

    def _backward(self, loss: Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def _update(self) -> bool:
        """Clip and apply the accumulated gradient, then clear it; a non-finite gradient is never applied."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.trainer.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(params, self.config.trainer.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])) if params else None
        if self.scaler is None and norm is not None and not torch.isfinite(norm):
            bad = [name for name, p in self.model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            self.optimizer.zero_grad(set_to_none=True)
            where = f"non-finite gradients in {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}"
            return self._non_finite(f"gradient norm ({float(norm):g})", *self._replay, where=where)
        if self.scaler is not None:  # fp16: the scaler itself skips steps with inf gradients
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return True

    def _non_finite(self, what: str, x_seq: Tensor, start: int, states: list | None, where: str | None = None) -> bool:
        """``nan_policy=skip``: return False; ``stop``: raise :class:`NonFiniteError` naming the step and layer."""
        if self.config.trainer.nan_policy == "skip":
            return False
        if where is None:
            where = "first non-finite output: " + locate_non_finite(self.model, x_seq, states, first_step=start,
                                                                     autocast=self._autocast)
        last = latest_checkpoint(self.run_dir) if self.run_dir is not None else None
        kept = f"the last good checkpoint is {last}" if last is not None else "no checkpoint was written yet"
        raise NonFiniteError(
            f"non-finite {what} at training step {self.global_step + 1} (epoch {self.epoch + 1}, batch {self.batch + 1}); "
            f"{where}. Training stopped before applying it; {kept}. Lower optim.lr, set "
            f"trainer.grad_clip, or set trainer.nan_policy=skip to skip such batches"
        )

    def train_batch(self, x_seq: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        """One batch of training; returns the detached output ``[T, B, C]`` and its loss (None: skipped, non-finite)."""
        k = self.config.trainer.detach_every
        _zero_states(self.model)
        if self.config.trainer.learning == "trace":
            return self._train_batch_trace(x_seq, y)
        if k is None:
            with self._autocast():
                out = run_sequence(self.model, x_seq)
            loss = self.readout.loss(out.float(), y)
            self._replay = (x_seq, 0, None)
            if not self._step(loss):
                return None
            return out.detach().float(), loss.detach()
        steps = x_seq.shape[0]
        outs = []
        for start in range(0, steps, k):
            states = snapshot_states(self.model)
            with self._autocast():
                chunk = torch.stack([self.model(x_t) for x_t in x_seq[start : start + k].unbind(0)])
            loss = self.readout.chunk_loss(chunk.float(), y, start, steps)
            self._replay = (x_seq[start : start + k], start, states)
            if loss is not None and not self._step(loss):
                return None
            _detach_states(self.model)
            outs.append(chunk.detach().float())
        out = torch.cat(outs)
        loss = self.readout.loss(out, y)
        if not torch.isfinite(loss).all() and not self._non_finite(f"loss ({float(loss):g})", x_seq, 0, None):
            return None
        return out, loss

    def _train_batch_trace(self, x_seq: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        """Online (OTTT): per step forward, backward of the step's loss, detach; update every ``update_every`` steps."""
        steps = x_seq.shape[0]
        k = self.config.trainer.update_every or steps
        self.optimizer.zero_grad(set_to_none=True)
        outs, pending = [], False
        for t, x_t in enumerate(x_seq.unbind(0)):
            states = snapshot_states(self.model)
            with self._autocast():
                out_t = self.model(x_t)
            loss = self.readout.chunk_loss(out_t.unsqueeze(0).float(), y, t, steps)
            self._replay = (x_seq[t : t + 1], t, states)
            if loss is not None:
                if not torch.isfinite(loss.detach()).all():
                    if not self._non_finite(f"loss ({float(loss.detach()):g})", *self._replay):
                        self.optimizer.zero_grad(set_to_none=True)
                        return None
                self._backward(loss)
                pending = True
            _detach_states(self.model)
            outs.append(out_t.detach().float())
            if pending and ((t + 1) % k == 0 or t == steps - 1):
                if not self._update():
                    return None
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
                result = self.train_batch(x, y)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if result is None:
                    self.meter.skipped += 1
                else:
                    out, loss = result
                    self.meter.add(float(loss), self.readout.correct(out, y), len(y))
                    self.meter.spike_total += monitor.total
                    self.meter.spike_numel += monitor.numel
                self.meter.seconds += time.perf_counter() - start_time
                self.batch += 1
                if progress is not None:
                    progress.update_batch(self.meter)
                every = cfg.trainer.checkpoint_every
                if every and self.batch % every == 0 and self.batch < total and self._checkpointing():
                    self.save_checkpoint()
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
            "skipped_batches": m.skipped,
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
                path = self.save_checkpoint() if self._checkpointing() else None
                raise Interrupted(path) from None
        if self.run_dir is not None and self.config.trainer.plots:
            with self._writing(self.run_dir):
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

    def _checkpointing(self) -> bool:
        return self.run_dir is not None and self.config.trainer.checkpoint

    @contextmanager
    def _writing(self, target: Path) -> Iterator[None]:
        """Turn an ``OSError`` while writing ``target`` into a :class:`RunDirError` that says what is still safe."""
        try:
            yield
        except OSError as err:
            last = latest_checkpoint(self.run_dir) if self.run_dir is not None else None
            kept = f"the last complete checkpoint {last} is intact" if last is not None else "no checkpoint was written yet"
            reason = err.strerror or str(err)
            raise RunDirError(
                f"cannot write {err.filename or target}: {reason} (errno {err.errno}); training stopped at step "
                f"{self.global_step}; {kept}. Free space or choose another trainer.run_dir, then continue with "
                f"trainer.resume=<checkpoint dir>"
            ) from err

    def _prepare_run_dir(self) -> None:
        """Fail now, not after hours, when the run dir cannot be written; clean up partial checkpoints of killed runs."""
        assert self.run_dir is not None
        probe = self.run_dir / f".write-test-{os.getpid()}"
        with self._writing(self.run_dir):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
            remove_partial_checkpoints(self.run_dir)
            for leftover in self.run_dir.glob(".*.tmp"):  # temporary files of atomic writes cut short by a kill
                leftover.unlink(missing_ok=True)

    def save_outputs(self) -> None:
        if self.run_dir is None:
            return
        with self._writing(self.run_dir / "metrics.jsonl"):
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
        directory = Path(directory)
        info = {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step}
        with self._writing(directory):
            save_checkpoint(directory, model=self.model, trainer_state=self.trainer_state(),
                            config=self.config.to_dict(), info=info)
            keep = self.config.trainer.keep_checkpoints
            if keep and self.run_dir is not None and directory.parent == self.run_dir / "checkpoints":
                prune_checkpoints(self.run_dir, keep)
        return directory

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
        _load_weights(self.model, ckpt, self.config.to_dict(), self.device)
        state = ckpt.trainer
        saved_optim = (ckpt.config.get("optim") or {}).get("name")
        if saved_optim is not None and saved_optim != self.config.optim.name:
            raise CheckpointError(f"{where}: the checkpoint's run used optim.name={saved_optim} but this run uses "
                                  f"{self.config.optim.name}; resume with the same optimizer")
        try:
            if (state["scheduler"] is None) != (self.scheduler is None):
                raise CheckpointError(f"{where}: optim.scheduler differs from the checkpoint's run")
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
            progress = state["progress"]
            self.epoch, self.batch, self.global_step = progress["epoch"], progress["batch"], progress["global_step"]
            self.history = list(state["history"])
            self.meter = Meter.from_dict(state["meter"])
            restore_rng(state["rng"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            raise CheckpointError(f"{where}: the trainer state does not fit this run ({type(err).__name__}: {err}); "
                                  f"optim differs from the checkpoint's run: {_differences(ckpt, self.config.to_dict(), 'optim')}"
                                  ) from None
        return Path(where)


def _differences(ckpt: Checkpoint, config: dict[str, Any], *sections: str) -> str:
    diffs = [d for section in sections for d in config_differences(ckpt.config.get(section), config.get(section), section)]
    return "; ".join(diffs) if diffs else "no differences in " + ", ".join(sections)


def _load_weights(model: nn.Module, ckpt: Checkpoint, config: dict[str, Any], device: torch.device) -> None:
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
        load_model_states(model, ckpt.states)
    except ValueError as err:
        restore_states(before)
        raise CheckpointError(f"{ckpt.path}: the checkpoint's hidden states do not fit this model: {err}") from None
    model.load_state_dict({k: v.to(device) for k, v in ckpt.weights.items()})


def train(config: Any, model: nn.Module | None = None, splits: Splits | None = None, progress: Any = None) -> dict[str, Any]:
    """Build a :class:`Trainer` from ``config`` and :meth:`Trainer.fit` it; returns the summary."""
    return Trainer(config, model=model, splits=splits).fit(progress)


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


def evaluate_checkpoint(
    path: str | Path, overrides: dict[str, Any] | list[str] | None = None, model: nn.Module | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Load a checkpoint (its config, weights, hidden states) and evaluate it on ``split``.

    ``overrides`` are nested config updates, e.g. ``{"data": {"root": "/data"}, "trainer": {"device": "cpu"}}``,
    or ``key=value`` strings such as ``["data.root=/data", "model.layers.1.Linear.out_features=64"]``.
    """
    ckpt = load_checkpoint(path)
    config = _apply_overrides(ckpt.config, overrides)
    config["trainer"].update(resume=None, run_dir=None)
    trainer = Trainer(config, model=model)
    _load_weights(trainer.model, ckpt, trainer.config.to_dict(), trainer.device)
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    result = trainer.evaluate(trainer.splits.test if split == "test" else trainer.splits.train)
    return {"checkpoint": str(path), "split": split, "epoch": ckpt.manifest.get("epoch"),
            "global_step": ckpt.manifest.get("global_step"), **result}
