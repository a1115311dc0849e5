"""``tt-train``: train a spiking network from the Hydra configs shipped in ``tracetorch.configs``.

Examples::

    tt-train                                   # digits, rate coding, MLP (no download needed)
    tt-train model=path/to/net.yaml            # your own model file
    tt-train experiment=mnist_conv data.root=/data
    tt-train trainer.detach_every=1            # fully online learning
    tt-train -m optim.lr=1e-3,3e-3 model=mlp,conv
    torchrun --nproc_per_node=4 -m tracetorch.cli.train data.batch_size=256   # one run on 4 GPUs

The training itself is :class:`tracetorch.training.Trainer`; this file only checks the
command line, picks and checks the run dir, wires Hydra, the terminal output and exit codes.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tracetorch.cli.config import ConfigError, check_overrides, model_file_overrides, resolve_config
from tracetorch.cli.errors import USER_ERRORS, fail, interrupted

__all__ = ["main", "run"]
MULTIRUN_FLAGS = ("-m", "--multirun")
STARTUP_FILES = {".hydra", "train.log", ".lock"}  # what a run dir holds when a start failed before training
_created: set[Path] = set()


def run(cfg: DictConfig) -> float:
    """Train with a composed config; returns the best test accuracy (what sweepers optimize)."""
    from hydra.core.hydra_config import HydraConfig

    from tracetorch.training import Interrupted, Trainer
    from tracetorch.training.distributed import detect_world
    from tracetorch.training.progress import make_console, summary_table
    from tracetorch.training.rules import get_rule

    console = make_console()
    world = detect_world()
    console.quiet = not world.is_main  # the other ranks print nothing (errors still go to stderr)
    program = "tt-train" if world.is_main else f"tt-train (rank {world.rank})"
    run_dir = None
    try:
        config = resolve_config(cfg).to_dict()
        if not config["trainer"].get("run_dir"):
            config["trainer"]["run_dir"] = HydraConfig.get().runtime.output_dir
        run_dir = Path(config["trainer"]["run_dir"])
        console.print(f"[bold]run dir[/bold] {run_dir}")
        if get_rule(config["trainer"]["learning"]).episodic:
            return _run_episodes(config, console)
        trainer = Trainer(config)
        if trainer.resumed_from is not None:
            console.print(f"resumed from {trainer.resumed_from} (epoch {trainer.epoch}, batch {trainer.batch}, step "
                          f"{trainer.global_step})")
        if trainer.epoch >= trainer.config.trainer.epochs:
            console.print(f"the run is already complete ({trainer.epoch} of {trainer.config.trainer.epochs} epochs)")
        console.print(f"[bold]device[/bold] {trainer.device}  [bold]data[/bold] {trainer.splits.name} "
                      f"({len(trainer.splits.train):,} train / {len(trainer.splits.test):,} test)  "
                      f"[bold]steps[/bold] {trainer.num_steps}  [bold]learning[/bold] {trainer.config.trainer.learning}")
        summary = trainer.fit()
    except Interrupted as stop:
        if stop.checkpoint is not None:
            console.print(f"interrupted; checkpoint written to {stop.checkpoint}\n"
                          f"continue with: tt-train trainer.resume={stop.checkpoint} (plus the same overrides)")
        else:
            console.print(f"interrupted twice: stopped at once without a checkpoint; the last complete checkpoint is "
                          f"{stop.last}")
        sys.exit(stop.exit_code)
    except USER_ERRORS as err:
        _remove_if_unused(run_dir)
        fail(program, err)
    console.print(summary_table(summary))
    return float(summary.get("best_test_accuracy") or 0.0)


def _run_episodes(config: dict, console: object) -> float:
    """``trainer.learning=reflect``: episodes in an environment (tracetorch.training.episodes)."""
    from tracetorch.training.episodes import EpisodeTrainer
    from tracetorch.training.progress import summary_table

    trainer = EpisodeTrainer(config)
    if trainer.resumed_from is not None:
        console.print(f"resumed from {trainer.resumed_from} (episode {trainer.epoch})")
    console.print(f"[bold]environment[/bold] {trainer.rl.env.id}  [bold]episodes[/bold] {trainer.rl.episodes}  "
                  f"[bold]learning[/bold] reflect")
    summary = trainer.fit()
    console.print(summary_table(summary))
    return float(summary.get("best_mean_return_100") or 0.0)


def _remove_if_unused(run_dir: Path | None) -> None:
    """A run dir this process created whose start failed holds only Hydra's files: leave nothing behind."""
    if run_dir is None or run_dir.resolve() not in _created or not run_dir.is_dir():
        return
    if {p.name for p in run_dir.iterdir()} <= STARTUP_FILES:
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path="pkg://tracetorch.configs", config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    return run(cfg)


def _output_dir(args: list[str], multirun: bool) -> list[str]:
    """Pick (and check) the run or sweep dir before Hydra writes there: an override for it, or RunDirError.

    The default ``outputs/<date>/<time>`` gets a ``-1``, ``-2`` suffix when two runs start in
    the same second; a given ``hydra.run.dir`` is checked as it is (its lock guards it).
    """
    from tracetorch.training.rundir import probe_writable, unique_dir

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = next((a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")), None)
    if given is not None:
        if not multirun and "${" not in given:
            probe_writable(Path(given))
        return []
    root = os.environ.get("TT_OUTPUT_DIR") or ("multirun" if multirun else "outputs")
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    chosen = unique_dir(Path(root) / stamp)
    if not multirun:
        probe_writable(chosen)
    _created.add(chosen.resolve())
    return [f"{key}={chosen}"]


def _distributed_run_dir(args: list[str], device: str) -> list[str]:
    """Under torchrun/srun: join the process group; rank 0 picks the run dir and every rank gets the same one.

    The other ranks write neither Hydra's ``.hydra/`` files nor a log file.
    """
    from tracetorch.training.distributed import init_world

    given = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), None)
    if given is not None and "${" in given:
        raise ConfigError(f"hydra.run.dir={given}: each process would resolve the interpolation itself; give a plain "
                          f"path, or leave hydra.run.dir out (rank 0 picks outputs/<date>/<time>)")
    world = init_world(device)
    chosen: list[str] | BaseException
    try:
        chosen = _output_dir(args, False) if world.is_main else []
    except USER_ERRORS as err:
        chosen = err
    chosen = world.broadcast(chosen)
    if isinstance(chosen, BaseException):
        raise chosen
    quiet = [] if world.is_main else ["hydra.output_subdir=null", f"hydra.job_logging.handlers.file.filename={os.devnull}"]
    return chosen + quiet


def main() -> None:
    """Check the overrides and the run dir (one clear error, exit 2), then let Hydra run (or sweep) with them."""
    from tracetorch.training.distributed import detect_world

    args = sys.argv[1:]
    multirun = any(a in MULTIRUN_FLAGS for a in args)
    try:
        world = detect_world()
        if world.distributed and multirun:
            raise ConfigError("tt-train -m under torchrun/srun: a launcher starts one run on several processes; sweep "
                              "without it and let hydra/launcher=joblib or submitit_slurm run the jobs (README: Scaling out)")
        args = model_file_overrides(args)
        if not any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in args):  # --help, --cfg ...: Hydra's business
            config = check_overrides([a for a in args if a not in MULTIRUN_FLAGS], multirun=multirun)
            if world.distributed:
                args += _distributed_run_dir(args, config.trainer.device if config is not None else "auto")
            else:
                args += _output_dir(args, multirun)
    except ConfigError as err:
        fail("tt-train", err)
    except USER_ERRORS as err:
        fail("tt-train", err)
    except KeyboardInterrupt:
        interrupted("tt-train")
    sys.argv = [sys.argv[0], *args]
    try:
        hydra_main()
    except KeyboardInterrupt:
        interrupted("tt-train")


if __name__ == "__main__":
    main()
