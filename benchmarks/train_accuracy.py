"""Accuracy and throughput of the shipped training configs (a benchmark, not a test).

Runs, each through the same Hydra configs ``tt-train`` uses:

* ``digits``: the default experiment (a bare ``tt-train``), target test accuracy >= 95%;
* ``mnist_mlp`` / ``mnist_conv``: rate-coded MNIST trained on the 5,000-image split in
  ``shared/data`` (beside the repository) and tested on the official 10,000 images,
  targets >= 94% (MLP) and >= 97% (conv).

Usage::

    python benchmarks/train_accuracy.py                       # all three
    python benchmarks/train_accuracy.py --runs digits mnist_mlp --set trainer.epochs=5

Prints one table: test accuracy, target, train samples/s, wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table

from tracetorch.training import Trainer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RUNS = {
    "digits": ([], 0.95),
    "mnist_mlp": (["experiment=mnist_mlp"], 0.94),
    "mnist_conv": (["experiment=mnist_conv"], 0.97),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--data-root", default=str(SHARED_DATA), help="folder holding MNIST/raw")
    parser.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--run-dir", default="outputs/bench", help="where each run writes checkpoints and plots")
    args = parser.parse_args()
    console = Console(width=140)
    table = Table(title="tt-train accuracy benchmark")
    for column in ("run", "epochs", "steps T", "test accuracy", "target", "met", "train samples/s", "test samples/s", "wall s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name in args.runs:
        overrides, target = RUNS[name]
        overrides = [*overrides, "trainer.progress=false", f"trainer.run_dir={args.run_dir}/{name}", *args.set]
        if name.startswith("mnist"):
            overrides += [f"data.root={args.data_root}", "data.download=false"]
        with initialize_config_module(config_module="tracetorch.configs", version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        start = time.perf_counter()
        trainer = Trainer(cfg)
        summary = trainer.fit()
        wall = time.perf_counter() - start
        test = trainer.evaluate()
        console.log(f"{name}: {summary}")
        table.add_row(name, str(summary["epochs"]), str(trainer.num_steps), f"{summary['test_accuracy']:.4f}", f"{target:.2f}",
                      "yes" if summary["test_accuracy"] >= target else "NO", f"{summary['samples_per_s']:,.0f}",
                      f"{test['samples_per_s']:,.0f}", f"{wall:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
