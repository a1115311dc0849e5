"""Sweep summaries: one row per run of a Hydra multirun, printed and written as CSV.

:class:`SweepSummary` is a Hydra callback (registered in ``configs/train.yaml`` under
``hydra.callbacks``); at the end of ``tt-train -m ...`` it reads every job folder of the
sweep dir (``.hydra/overrides.yaml`` and ``metrics.jsonl``) and writes ``summary.csv``
there. :func:`collect_runs` does the reading and works on any finished sweep dir.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

from tracetorch.training.metrics import read_jsonl

__all__ = ["collect_runs", "write_summary", "SweepSummary"]

COLUMNS = ("job", "params", "overrides", "status", "epochs", "best_test_accuracy", "best_epoch", "final_test_accuracy",
           "final_train_loss", "samples_per_s", "run_dir")


def collect_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder (a folder holding ``.hydra/overrides.yaml``), sorted by job number.

    ``params`` lists the overrides that differ between the runs, ``overrides`` all of them.
    """
    rows = []
    jobs = [p for p in Path(sweep_dir).iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    for job in sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text(encoding="utf-8")) or []
        row: dict[str, Any] = {"job": job.name, "overrides": " ".join(overrides), "run_dir": str(job)}
        history = read_jsonl(job / "metrics.jsonl") if (job / "metrics.jsonl").is_file() else []
        if history and "return" in history[0]:  # trainer.learning=reflect: episodes, scored by the 100-episode mean return
            row.update(status="ok", epochs=history[-1]["epoch"],
                       best_test_accuracy=max(r["mean_return_100"] for r in history), final_train_loss=None,
                       final_test_accuracy=history[-1]["mean_return_100"], best_epoch=None, samples_per_s=None)
        elif history:
            best = max(history, key=lambda r: -1.0 if r["test_accuracy"] is None else r["test_accuracy"])
            row.update(
                status="ok",
                epochs=history[-1]["epoch"],
                best_test_accuracy=best["test_accuracy"],
                best_epoch=best["epoch"],
                final_test_accuracy=history[-1]["test_accuracy"],
                final_train_loss=history[-1]["train_loss"],
                samples_per_s=sum(r["samples_per_s"] for r in history) / len(history),
            )
        else:
            row["status"] = "no metrics (failed or interrupted)"
        row["_list"] = overrides
        rows.append(row)
    shared = set.intersection(*(set(r["_list"]) for r in rows)) if len(rows) > 1 else set()
    for row in rows:
        row["params"] = " ".join(o for o in row.pop("_list") if o not in shared)
    return [{key: row.get(key) for key in COLUMNS} for row in rows]


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``summary.csv`` into ``sweep_dir``."""
    from tracetorch.core.state_io import atomic_write

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    path = Path(sweep_dir) / "summary.csv"

    def write(tmp: str) -> None:
        Path(tmp).write_text(buffer.getvalue(), encoding="utf-8")

    atomic_write(path, write)
    return path


def print_summary(rows: list[dict[str, Any]], path: Path | None = None) -> None:
    from rich.table import Table

    from tracetorch.training.progress import format_value, make_console

    table = Table(title=f"Sweep summary ({len(rows)} runs)")
    columns = ("job", "params", "best_test_accuracy", "best_epoch", "final_test_accuracy", "samples_per_s", "status")
    for column in columns:
        table.add_column(column, justify="left" if column in ("params", "status") else "right")
    for row in rows:
        table.add_row(*(format_value(row[c]) for c in columns))
    console = make_console()
    console.print(table)
    if path is not None:
        console.print(f"summary written to {path}")


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object  # type: ignore[assignment,misc]


class SweepSummary(Callback):  # type: ignore[misc,valid-type]
    """Hydra callback: after a multirun, print the runs table and write ``<sweep dir>/summary.csv``."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = collect_runs(sweep_dir)
        path = write_summary(sweep_dir, rows)
        print_summary(rows, path)
