"""Callbacks and experiment loggers: where a run's progress and metrics go.

A :class:`Callback` hears the loop's events (``on_fit_start``, ``on_epoch_start``,
``on_batch_end``, ``on_epoch_end``, ``on_fit_end``); ``trainer.loggers`` picks the
metric sinks, each a callback:

* ``jsonl``: ``<run_dir>/metrics.jsonl``, one line per epoch (rewritten atomically);
* ``rich``: progress on the terminal (bars on a terminal, one plain line per epoch
  otherwise) and the same epoch line in the run's log (``train.log`` under ``tt-train``);
* ``tensorboard``: event files in ``<run_dir>/tensorboard`` (``pip install "tracetorch[tensorboard]"``);
* ``mlflow``: one MLflow run per training run, in ``trainer.mlflow_uri`` or a local
  ``mlruns/`` folder beside the run dir (``pip install "tracetorch[mlflow]"``; no server needed).

Example:
    >>> from tracetorch.training.config import TrainerConfig
    >>> from tracetorch.training.callbacks import make_loggers
    >>> [type(c).__name__ for c in make_loggers(TrainerConfig(loggers=["jsonl"]), None)]
    []
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracetorch.training.metrics import Meter, write_jsonl

__all__ = ["Callback", "JsonlLogger", "ConsoleLogger", "TensorBoardLogger", "MLflowLogger", "make_loggers",
           "epoch_line", "MissingExtraError"]

log = logging.getLogger("tracetorch.training.epochs")


class MissingExtraError(ImportError):
    """An optional logger's package is not installed; the message names the extra to install."""


class Callback:
    """Hooks called by :class:`~tracetorch.training.loop.Trainer`; override the ones you need."""

    def on_fit_start(self, trainer: Any) -> None: ...

    def on_epoch_start(self, trainer: Any, total_batches: int) -> None: ...

    def on_batch_end(self, trainer: Any, meter: Meter) -> None: ...

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Any, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _numeric(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}


def epoch_line(record: dict[str, Any]) -> str:
    """One line per epoch (or per block of episodes), the same on the terminal and in the log file."""
    if "return" in record:
        return (f"episode {record['episode']}: return {record['return']:.1f} | mean of the last 100 "
                f"{record['mean_return_100']:.1f} | {record['env_steps']:,} environment steps")
    test = "not evaluated" if record["test_accuracy"] is None else (
        f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}")
    return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f} | "
            f"{test} | spike rate {record['spike_rate']:.3f} | {record['samples_per_s']:,.0f} samples/s")


class JsonlLogger(Callback):
    """``metrics.jsonl``: the whole history, rewritten atomically after every epoch."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        from tracetorch.training.rundir import writing

        with writing(self.path, trainer._what_is_safe):
            write_jsonl(self.path, trainer.history)


class ConsoleLogger(Callback):
    """Progress bars on a terminal (``trainer.progress``), else one plain line per epoch; every epoch line is logged."""

    def __init__(self, bars: bool = True, console: Any = None) -> None:
        from tracetorch.training.progress import make_console

        self.console = console or make_console()
        self.bars = bars and self.console.is_terminal
        self.progress: Any = None

    def on_fit_start(self, trainer: Any) -> None:
        if self.bars:
            from tracetorch.training.progress import RichProgress

            self.progress = RichProgress(trainer.config.trainer.epochs, trainer.epoch, self.console).__enter__()

    def on_epoch_start(self, trainer: Any, total_batches: int) -> None:
        if self.progress is not None:
            self.progress.start_batches(f"epoch {trainer.epoch + 1}", total_batches, trainer.batch)

    def on_batch_end(self, trainer: Any, meter: Meter) -> None:
        if self.progress is not None:
            self.progress.update_batch(meter)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        line = epoch_line(record)
        log.info(line)
        if self.progress is not None:
            self.progress.end_epoch(record)
        else:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None


def _require(module: str, extra: str, logger: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"trainer.loggers={logger} needs the {module.split('.')[0]!r} package: "
                                f'pip install "tracetorch[{extra}]"') from None


class TensorBoardLogger(Callback):
    """Scalars per epoch (``train_loss``, ``test_accuracy``, ...) in ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir: Path) -> None:
        _require("tensorboard", "tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        for key, value in _numeric(record).items():
            self.writer.add_scalar(key, value, global_step=record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowLogger(Callback):
    """One MLflow run: the config's flat keys as params, each epoch's numbers as metrics (step = epoch)."""

    def __init__(self, run_dir: Path, uri: str | None, config: dict[str, Any]) -> None:
        self.mlflow = _require("mlflow", "mlflow", "mlflow")
        if uri is None:  # a plain local folder: MLflow's file store, which MLflow 3 only keeps behind this switch
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir.resolve().parent / "mlruns").as_uri()
        self.client = self.mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name("tracetorch")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("tracetorch")
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        for key, value in _flatten(config).items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        for key, value in _numeric(record).items():
            self.client.log_metric(self.run_id, key, value, step=record["epoch"])

    def on_fit_end(self, trainer: Any, summary: dict[str, Any]) -> None:
        self.client.set_terminated(self.run_id)


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "model":
            continue  # the model spec is a document, not a parameter
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


LOGGERS: dict[str, Callable[[Any, Path, dict[str, Any]], Callback]] = {
    "jsonl": lambda cfg, run_dir, config: JsonlLogger(run_dir),
    "rich": lambda cfg, run_dir, config: ConsoleLogger(bars=cfg.progress),
    "tensorboard": lambda cfg, run_dir, config: TensorBoardLogger(run_dir),
    "mlflow": lambda cfg, run_dir, config: MLflowLogger(run_dir, cfg.mlflow_uri, config),
}
NEED_RUN_DIR = ("jsonl", "tensorboard", "mlflow")


def make_loggers(trainer: Any, run_dir: Path | None, config: dict[str, Any] | None = None) -> list[Callback]:
    """The callbacks ``trainer.loggers`` names (those writing files only when there is a run dir)."""
    chosen = [name for name in dict.fromkeys(trainer.loggers) if run_dir is not None or name not in NEED_RUN_DIR]
    return [LOGGERS[name](trainer, run_dir, config or {}) for name in chosen]  # type: ignore[arg-type]
