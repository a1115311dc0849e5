"""Rich terminal output for training: progress bars and the final summary table.

:class:`RichProgress` is what :meth:`tracetorch.training.Trainer.fit` reports to: an epoch
bar and a batch bar showing loss, accuracy, mean spike rate and samples/s.

Example:
    >>> from tracetorch.training.progress import summary_table
    >>> table = summary_table({"test_accuracy": 0.95, "epochs": 3})
    >>> [c.header for c in table.columns], table.row_count
    (['metric', 'value'], 2)
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tracetorch.training.metrics import Meter

__all__ = ["RichProgress", "summary_table", "format_value", "make_console"]

WIDE = 200  # columns when writing to a file or pipe, where rich would otherwise assume 80 and cut tables


def make_console(stderr: bool = False) -> Console:
    """A console that wraps nothing and, off a terminal, is wide enough for whole tables."""
    console = Console(stderr=stderr, soft_wrap=True)
    return console if console.is_terminal else Console(stderr=stderr, soft_wrap=True, width=WIDE)


def format_value(value: Any) -> str:
    """One style everywhere: integers with thousands separators, rates and seconds to one decimal, metrics to four."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    return str(value)


def summary_table(summary: dict[str, Any], title: str = "Training summary") -> Table:
    """A two-column table of ``summary``'s metrics."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, format_value(value))
    return table


class RichProgress:
    """Epoch and batch progress bars (use as a context manager around ``Trainer.fit``)."""

    def __init__(self, total_epochs: int, start_epoch: int = 0, console: Console | None = None) -> None:
        self.console = console or make_console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
        )
        self.epochs = self.progress.add_task("epochs", total=total_epochs, completed=start_epoch, stats="")
        self.batches: Any = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_batches(self, description: str, total: int, completed: int) -> None:
        if self.batches is not None:
            self.progress.remove_task(self.batches)
        self.batches = self.progress.add_task(description, total=total, completed=completed, stats="")

    def update_batch(self, meter: Meter) -> None:
        stats = (f"loss {meter.loss:.4f}  acc {meter.accuracy:.3f}  rate {meter.spike_rate:.3f}  "
                 f"{meter.samples_per_s:,.0f} samples/s")
        self.progress.update(self.batches, advance=1, stats=stats)

    def end_epoch(self, record: dict[str, Any]) -> None:
        test = "not evaluated" if record["test_accuracy"] is None else (
            f"test loss {record['test_loss']:.4f} acc {record['test_accuracy']:.4f}")
        self.progress.update(self.epochs, advance=1, stats=test)
        from tracetorch.training.callbacks import epoch_line

        self.progress.console.print(epoch_line(record), markup=False, highlight=False)
