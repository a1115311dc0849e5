"""The training loop: epochs of batches handed to a learning rule, evaluation, checkpoints, outputs.

Usable from Python without Hydra::

    from tracetorch.training import Trainer
    summary = Trainer({"data": {"name": "digits"}, "trainer": {"epochs": 5, "run_dir": "runs/a"}}).fit()

or with your own model: ``Trainer(config, model=my_model).fit()``.

One batch: the data gives ``x`` (``[B, ...]`` images, or ``[T, B, ...]`` sequences that
skip the encoder); the encoder makes ``[T, B, ...]``; the learning rule
(:mod:`tracetorch.training.rules`, chosen by ``trainer.learning``) turns it into
optimizer steps through :class:`~tracetorch.training.step.OptimizerStep`. The loop knows
nothing of the rule.

Reproducibility: the sample order of epoch ``e`` and the encoder's randomness for batch
``b`` come from generators seeded by ``(seed, e, b)``; global RNG states are saved in
every checkpoint. So a run stopped after any batch and resumed from its checkpoint ends
bit-identical to one that never stopped (on the same device).

Several processes (``torchrun``, ``srun``): :mod:`tracetorch.training.distributed`. The
trainer's ``world`` says which rank this is; rank 0 alone locks and writes the run dir, and
every rank takes its slice of each global batch (``data.batch_size`` is global).

Interrupts: Ctrl-C (SIGINT) or SIGTERM set a flag that the loop reads between batches: a
checkpoint of a consistent state is written there and :class:`Interrupted` raised. A
second Ctrl-C stops at once, without a checkpoint (the half-done step is never saved).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.core.states import zero_states
from tracetorch.data.datasets import load_dataset
from tracetorch.data.encoders import Encoder, make_encoder
from tracetorch.data.splits import Part, Splits
from tracetorch.kernels.sequence import run as run_sequence
from tracetorch.training import checkpoint as ckpt_files
from tracetorch.training.callbacks import Callback, make_loggers
from tracetorch.training.config import TrainConfig
from tracetorch.training.distributed import init_world
from tracetorch.training.metrics import Meter, SpikeMonitor
from tracetorch.training.readout import get_readout
from tracetorch.training.rules import RuleContext, get_rule
from tracetorch.training.rundir import RunDirOwner, writing
from tracetorch.training.setup import (
    amp_dtype,
    autocast_context,
    check_model_output,
    derive_seed,
    make_optimizer,
    make_scheduler,
    model_from_config,
    seed_everything,
)
from tracetorch.training.step import OptimizerStep

__all__ = ["Trainer", "train", "Interrupted", "stop_signals"]

STREAM_ORDER, STREAM_TRAIN, STREAM_TEST, STREAM_PLOT = 0, 1, 2, 3
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM; ``.checkpoint`` is where it was saved (None: stopped at once)."""

    def __init__(self, checkpoint: Path | None, signum: int = signal.SIGINT, last: Path | None = None) -> None:
        where = f"checkpoint: {checkpoint}" if checkpoint else f"no checkpoint written; the last complete one is {last}"
        super().__init__(f"training interrupted; {where}")
        self.checkpoint = checkpoint
        self.last = last
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 130)


class _StopRequested(Exception):
    """Raised by the loop at a batch boundary once a stop signal was received."""


@contextmanager
def stop_signals(flag: dict[str, Any]) -> Iterator[None]:
    """SIGINT and SIGTERM set ``flag['signum']``; the loop stops at the next batch boundary. A second SIGINT stops now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.get("signum") and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signum"] = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer(RunDirOwner):
    """Train and evaluate a spiking model on a :class:`~tracetorch.data.Splits` dataset.

    Args:
        config: a dict / ``DictConfig`` / :class:`TrainConfig` (defaults: ``TrainConfig``'s).
        model: a ready model (otherwise built from ``config['model']``).
        splits: a ready dataset (otherwise loaded from ``config['data']``).
        callbacks: extra :class:`~tracetorch.training.callbacks.Callback` objects (beside ``trainer.loggers``).
    """

    def __init__(self, config: Any = None, model: nn.Module | None = None, splits: Splits | None = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.config = cfg = TrainConfig.from_any({} if config is None else config)
        seed_everything(cfg.seed)
        self.world = init_world(cfg.trainer.device)
        self.device = self.world.device
        self.run_dir = Path(cfg.trainer.run_dir) if cfg.trainer.run_dir else None
        if self.run_dir is not None and self.world.is_main:
            self.claim_run_dir(self.run_dir, self._what_is_safe)
        try:
            self._setup(model, splits, callbacks)
        except BaseException:
            self.close()
            raise

    def _setup(self, model: nn.Module | None, splits: Splits | None, callbacks: Sequence[Callback]) -> None:
        cfg = self.config
        self.splits = splits if splits is not None else load_dataset(cfg.data.model_dump())
        self.encoder: Encoder | None = None if self.splits.sequence else make_encoder(cfg.encoder.model_dump())
        self.num_steps = self.splits.num_steps if self.splits.sequence else self.encoder.num_steps  # type: ignore[union-attr]
        self.model = (model if model is not None else model_from_config(cfg.model, self.splits)).to(self.device)
        rule_cls = get_rule(cfg.trainer.learning)  # type: ignore[arg-type]
        if rule_cls.prepare_model is not None:
            rule_cls.prepare_model(self.model)
        check_model_output(self.model, self.splits, self.device)
        self.world.broadcast_parameters(self.model)
        self.world.seed_rank(cfg.seed)
        self.readout = get_readout(cfg.trainer.readout)
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.amp_dtype = amp_dtype(cfg.trainer.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.epoch = 0  # epochs completed
        self.batch = 0  # batches completed within the current epoch
        self.history: list[dict[str, Any]] = []
        self.meter = Meter()
        self.step = OptimizerStep(self.model, self.optimizer, cfg.trainer.grad_clip, cfg.trainer.nan_policy, self.scaler,
                                  self._autocast, lambda: f"epoch {self.epoch + 1}, batch {self.batch + 1}",
                                  self._last_checkpoint, world=self.world)
        self.rule = rule_cls(RuleContext(self.model, self.readout, self.step, self._autocast, cfg.trainer))
        self._stop: dict[str, Any] = {}
        if self.run_dir is not None and self.world.is_main:
            with writing(self.run_dir, self._what_is_safe):
                ckpt_files.remove_partial_checkpoints(self.run_dir)
                for leftover in self.run_dir.glob(".*.tmp"):  # temporary files of atomic writes cut short by a kill
                    leftover.unlink(missing_ok=True)
        self.world.barrier()
        self.resumed_from: Path | None = None
        if cfg.trainer.resume:
            from tracetorch.training.resume import resume

            self.resumed_from = resume(self, cfg.trainer.resume)
        loggers = make_loggers(cfg.trainer, self.run_dir, cfg.to_dict()) if self.world.is_main else []
        self.callbacks: list[Callback] = [*loggers, *callbacks]

    @property
    def global_step(self) -> int:
        """Optimizer steps applied so far."""
        return self.step.global_step

    @global_step.setter
    def global_step(self, value: int) -> None:
        self.step.global_step = value

    # ---- helpers ---------------------------------------------------------------------

    def _autocast(self) -> Any:
        return autocast_context(self.amp_dtype)

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

    def _zero_states(self) -> None:
        zero_states(self.model)

    def _last_checkpoint(self) -> Path | None:
        return ckpt_files.latest_checkpoint(self.run_dir) if self.run_dir is not None else None

    def _what_is_safe(self, err: OSError) -> str:
        last = self._last_checkpoint() if self.run_dir is not None and self.run_dir.is_dir() else None
        kept = f"the last complete checkpoint {last} is intact" if last is not None else "no checkpoint was written yet"
        step = getattr(getattr(self, "step", None), "global_step", 0)
        return (f"training stopped at step {step}; {kept}. Free space or choose another trainer.run_dir, then continue "
                f"with trainer.resume=<checkpoint dir>")

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    # ---- training ------------------------------------------------------------------

    def train_batch(self, x_seq: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        """One batch of training; returns the detached output ``[T, B, C]`` and its loss (None: skipped, non-finite)."""
        self._zero_states()
        return self.rule.train_batch(x_seq, y)

    def train_epoch(self) -> dict[str, Any]:
        """Train the next epoch from batch ``self.batch`` on; returns its record (also appended to history)."""
        cfg = self.config
        epoch = self.epoch
        self.model.train()
        order = self._order(epoch)
        bs = cfg.data.batch_size
        total = self.num_batches(self.splits.train, bs, cfg.trainer.limit_train_batches)
        self._emit("on_epoch_start", total)
        with SpikeMonitor(self.model) as monitor:
            while self.batch < total:
                if self.world.any(bool(self._stop.get("signum"))):
                    self._stop.setdefault("signum", signal.SIGTERM)  # another rank's signal
                    raise _StopRequested
                start_time = time.perf_counter()
                index = order[self.batch * bs : (self.batch + 1) * bs]
                x, y = self._inputs(self.splits.train, index, self._generator(STREAM_TRAIN, epoch, self.batch))
                if self.world.distributed:
                    x, y = self._shard(x, y)
                monitor.reset()
                result = self.train_batch(x, y) if len(y) else None
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if result is None:
                    self.meter.skipped += int(len(y) > 0)  # an empty slice (a batch smaller than the world) is no skip
                else:
                    out, loss = result
                    self.meter.add(float(loss), self.readout.correct(out, y), len(y))
                    self.meter.spike_total += monitor.total
                    self.meter.spike_numel += monitor.numel
                self.meter.seconds += time.perf_counter() - start_time
                self.batch += 1
                self._emit("on_batch_end", self.meter)
                every = cfg.trainer.checkpoint_every
                if every and self.batch % every == 0 and self.batch < total and self._checkpointing():
                    self.save_checkpoint()
        record = self._finish_epoch()
        self._emit("on_epoch_end", record)
        return record

    def _shard(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's slice of a global batch (``x`` is ``[T, B, ...]``); empty when the batch is smaller than the world."""
        part = self.world.shard(len(y))
        if part is None:
            return x[:, :0], y[:0]
        self.step.loss_weight = self.world.loss_weight(part.stop - part.start, len(y))
        return x[:, part], y[part]

    def _finish_epoch(self) -> dict[str, Any]:
        done, every = self.epoch + 1, self.config.trainer.eval_every
        skip = {"loss": None, "accuracy": None, "spike_rate": None}
        test = self.evaluate() if done % every == 0 or done == self.config.trainer.epochs else skip
        m = self.world.reduce_meter(self.meter)
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
        """Loss, accuracy and spike rate on ``part`` (default: the test split); deterministic encoding.

        Several processes share the batches (batch ``b`` on rank ``b % world size``) and sum the results.
        """
        part = self.splits.test if part is None else part
        was_training = self.model.training
        self.model.eval()
        meter = Meter()
        bs = self.config.data.eval_batch_size
        total = self.num_batches(part, bs, self.config.trainer.limit_test_batches)
        start_time = time.perf_counter()
        with SpikeMonitor(self.model) as monitor:
            for b in range(self.world.rank, total, self.world.size):
                index = torch.arange(b * bs, min((b + 1) * bs, len(part)))
                x, y = self._inputs(part, index, self._generator(STREAM_TEST, b))
                self._zero_states()
                with self._autocast():
                    out = run_sequence(self.model, x).float()
                meter.add(float(self.readout.loss(out, y)), self.readout.correct(out, y), len(y))
        meter.seconds = time.perf_counter() - start_time
        meter.spike_total, meter.spike_numel = monitor.total, monitor.numel
        meter = self.world.reduce_meter(meter)
        self.model.train(was_training)
        return {"loss": meter.loss, "accuracy": meter.accuracy, "spike_rate": meter.spike_rate, "samples": meter.samples,
                "samples_per_s": meter.samples_per_s}

    def fit(self) -> dict[str, Any]:
        """Train until ``trainer.epochs``; checkpoint after each epoch. Returns :meth:`summary`.

        Ctrl-C or SIGTERM stops at the next batch boundary with a checkpoint (raises :class:`Interrupted`).
        """
        try:
            with stop_signals(self._stop):
                self._emit("on_fit_start")
                try:
                    while self.epoch < self.config.trainer.epochs:
                        self.train_epoch()
                        if self._checkpointing():
                            self.save_checkpoint()
                except _StopRequested:
                    path = self.save_checkpoint() if self._checkpointing() else None
                    raise Interrupted(path, self._stop["signum"]) from None
                except KeyboardInterrupt:
                    raise Interrupted(None, signal.SIGINT, self._last_checkpoint()) from None
            if self.run_dir is not None and self.config.trainer.plots and self.world.is_main:
                with writing(self.run_dir, self._what_is_safe):
                    self.plot()
            summary = self.summary()
            self._emit("on_fit_end", summary)
            return summary
        finally:
            self.close()

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

    def plot(self) -> None:
        """``curves.png`` (loss/accuracy) and ``raster.png`` (inputs, events and membrane of one test sample)."""
        from tracetorch.training.plots import plot_curves, plot_raster, record_sample

        assert self.run_dir is not None
        cfg = self.config
        if self.history:
            settings = {"model": cfg.model.get("name", "model"), "encoder": cfg.encoder.name, "steps": self.num_steps,
                        "learning": cfg.trainer.learning, "lr": cfg.optim.lr, "batch": cfg.data.batch_size}
            plot_curves(self.history, self.run_dir / "curves.png", run_name=self.run_dir.name, settings=settings)
        x, y = self._inputs(self.splits.test, torch.arange(1), self._generator(STREAM_PLOT))
        was_training = self.model.training
        self.model.eval()
        self._zero_states()
        spikes, membrane = record_sample(self.model, x)
        self._zero_states()
        with torch.no_grad():
            predicted = int(self.readout.logits(run_sequence(self.model, x).float()).argmax(-1)[0])
        self._zero_states()
        self.model.train(was_training)
        plot_raster(spikes, membrane, self.run_dir / "raster.png", title=f"test sample 0 (label {int(y[0])})",
                    inputs=x[:, 0], predicted=predicted)

    def trainer_state(self) -> dict[str, Any]:
        """Everything but the weights a checkpoint holds (collective in a multi-process run: global meter, every RNG)."""
        rng = ckpt_files.capture_rng()
        return {
            "progress": {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step},
            "meter": self.world.reduce_meter(self.meter).to_dict(),
            "history": self.history,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            **self.world.checkpoint_extras(rng),
        }

    def saved_config(self) -> dict[str, Any]:
        """The config a checkpoint records: the resolved one, with the model as it was really built."""
        from tracetorch.builder import model_to_spec

        config = self.config.to_dict()
        try:
            config["model"] = model_to_spec(self.model).to_dict()
        except (TypeError, ValueError):  # a model from a factory or a custom class: keep what the config said
            pass
        return config

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Write a checkpoint (default ``<run_dir>/checkpoints/step_<global step>``), pruning to ``keep_checkpoints``."""
        if directory is None:
            if self.run_dir is None:
                raise ValueError("save_checkpoint needs a directory when trainer.run_dir is not set")
            directory = self.run_dir / "checkpoints" / f"step_{self.global_step:08d}"
        directory = Path(directory)
        state = self.trainer_state()
        if not self.world.is_main:
            return directory
        info = {"epoch": self.epoch, "batch": self.batch, "global_step": self.global_step}
        keep = self.config.trainer.keep_checkpoints
        own = self.run_dir is not None and directory.parent == self.run_dir / "checkpoints"
        with writing(directory, self._what_is_safe):
            if keep and keep > 1 and own and not directory.exists():  # room first: a nearly full disk still takes it
                ckpt_files.prune_checkpoints(self.run_dir, keep - 1)
            ckpt_files.save_checkpoint(directory, model=self.model, trainer_state=state,
                                       config=self.saved_config(), info=info)
            if keep and own:
                ckpt_files.prune_checkpoints(self.run_dir, keep)
        return directory


def train(config: Any = None, model: nn.Module | None = None, splits: Splits | None = None,
          callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Build a :class:`Trainer` from ``config`` and :meth:`Trainer.fit` it; returns the summary."""
    return Trainer(config, model=model, splits=splits, callbacks=callbacks).fit()
