"""``tt-train``: train a spiking network from the Hydra configs shipped in ``tracetorch.configs``.

Examples::

    tt-train                                   # digits, rate coding, MLP (no download needed)
    tt-train experiment=mnist_conv data.root=/data
    tt-train trainer.detach_every=1            # fully online learning
    tt-train -m optim.lr=1e-3,3e-3 model=mlp,conv

The training itself is :class:`tracetorch.training.Trainer`; this file only wires Hydra,
the terminal output and exit codes.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig
from tracetorch.cli.config import ConfigError, check_overrides, resolve_config
from tracetorch.cli.errors import USER_ERRORS, fail

__all__ = ["main", "run"]
MULTIRUN_FLAGS = ("-m", "--multirun")


def run(cfg: DictConfig) -> float:
    """Train with a composed config; returns the best test accuracy (what sweepers optimize)."""
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console

    from tracetorch.training import Interrupted, Trainer
    from tracetorch.training.progress import RichProgress, summary_table

    console = Console()
    try:
        config = resolve_config(cfg).to_dict()
        if not config["trainer"].get("run_dir"):
            config["trainer"]["run_dir"] = HydraConfig.get().runtime.output_dir
        trainer = Trainer(config)
        console.print(f"[bold]run dir[/bold] {trainer.run_dir}  [bold]device[/bold] {trainer.device}  "
                      f"[bold]data[/bold] {trainer.splits.name} ({len(trainer.splits.train)} train / "
                      f"{len(trainer.splits.test)} test)  [bold]steps[/bold] {trainer.num_steps}")
        if trainer.config.trainer.progress:
            with RichProgress(trainer.config.trainer.epochs, trainer.epoch, console) as progress:
                summary = trainer.fit(progress)
        else:
            summary = trainer.fit()
    except Interrupted as stop:
        console.print(f"interrupted; checkpoint written to {stop.checkpoint}\n"
                      f"continue with: tt-train trainer.resume={stop.checkpoint} (plus the same overrides)")
        sys.exit(130)
    except USER_ERRORS as err:
        fail("tt-train", err)
    console.print(summary_table(summary))
    return float(summary.get("best_test_accuracy", 0.0))


@hydra.main(version_base="1.3", config_path="pkg://tracetorch.configs", config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    return run(cfg)


def main() -> None:
    """Check the overrides (one clear error, exit 2), then let Hydra run (or sweep) with them."""
    args = sys.argv[1:]
    if not any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in args):  # --help, --cfg, -cn ...: Hydra's business
        try:
            check_overrides([a for a in args if a not in MULTIRUN_FLAGS], multirun=any(a in MULTIRUN_FLAGS for a in args))
        except ConfigError as err:
            fail("tt-train", err)
    hydra_main()


if __name__ == "__main__":
    main()
