"""Training by episodes in an environment: ``trainer.learning=reflect`` (REFLECT, :mod:`tracetorch.rl`).

:class:`EpisodeTrainer` is the episode counterpart of :class:`~tracetorch.training.loop.Trainer`
and reuses its parts: the config schema, the model and optimizer setup, the run-dir lock,
the metric sinks, the checkpoint format and the stop signals. The environment, its
observation coding and the learner live in :class:`tracetorch.rl.ReflectDriver`; the
``rl`` config section is a :class:`tracetorch.rl.RLConfig` (seed from the top level).

One record per episode goes to ``metrics.jsonl`` (``epoch`` = episode, ``step`` =
environment steps, ``return``, ``length``, ``mean_return_100``); ``curves.png`` shows the
return over episodes. A checkpoint is written every ``trainer.checkpoint_every`` episodes
(default 50) and at the end, always between episodes, with the learner's eligibility traces,
baseline and the environment's RNG: ``trainer.resume=auto`` continues exactly.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tracetorch.training import checkpoint as ckpt_files
from tracetorch.training.callbacks import Callback, make_loggers
from tracetorch.training.config import TrainConfig
from tracetorch.training.loop import Interrupted, stop_signals
from tracetorch.training.metrics import Meter
from tracetorch.training.rundir import RunDirOwner, writing
from tracetorch.training.setup import make_optimizer, resolve_device, seed_everything

__all__ = ["EpisodeTrainer", "DEFAULT_CHECKPOINT_EVERY"]

DEFAULT_CHECKPOINT_EVERY = 50  # episodes


class EpisodeTrainer(RunDirOwner):
    """Train a spiking policy with REFLECT, one episode at a time (see the module docstring)."""

    def __init__(self, config: Any, model: nn.Module | None = None) -> None:
        from tracetorch.rl import ReflectDriver
        from tracetorch.rl.config import RLConfig
        from tracetorch.rl.driver import build_env

        self.config = cfg = TrainConfig.from_any(config)
        seed_everything(cfg.seed)
        self.device = resolve_device("cpu" if cfg.trainer.device == "auto" else cfg.trainer.device)
        if self.device.type != "cpu":
            raise ValueError("trainer.learning=reflect steps one environment at a time on the CPU; use trainer.device=cpu")
        self.rl = RLConfig.from_any({**(cfg.rl or {}), "seed": cfg.seed})
        self.run_dir = Path(cfg.trainer.run_dir) if cfg.trainer.run_dir else None
        if self.run_dir is not None:
            self.claim_run_dir(self.run_dir, self._what_is_safe)
        try:
            env, encoder, _ = build_env(self.rl)
            env.close()
            self.input_shape = [encoder.num_features]
            self.model = model if model is not None else _model(cfg.model, self.input_shape)
            self.optimizer = make_optimizer(self.model, cfg.optim)
            self.history: list[dict[str, Any]] = []
            self.driver = ReflectDriver(self.model, self.optimizer, self.rl, metrics=self._record)
            self.resumed_from: Path | None = None
            if cfg.trainer.resume:
                self.resumed_from = self._resume(cfg.trainer.resume)
            self.callbacks: list[Callback] = make_loggers(cfg.trainer, self.run_dir, cfg.to_dict())
        except BaseException:
            self.close()
            raise
        self._stop: dict[str, Any] = {}
        self.every = cfg.trainer.checkpoint_every or DEFAULT_CHECKPOINT_EVERY

    # the names the CLI prints (shared with Trainer)
    @property
    def epoch(self) -> int:
        return self.driver.episode

    @property
    def batch(self) -> int:
        return 0

    @property
    def global_step(self) -> int:
        return self.driver.learner.updates

    def _what_is_safe(self, err: OSError) -> str:
        return "free space or choose another trainer.run_dir, then continue with trainer.resume=auto"

    def _record(self, record: dict[str, Any]) -> None:
        self.history.append({"epoch": record["episode"], "step": record["env_steps"], **record})

    def fit(self) -> dict[str, Any]:
        """Run episodes until ``rl.episodes``; a checkpoint every ``checkpoint_every`` episodes and at the end."""
        total = self.rl.episodes
        try:
            with stop_signals(self._stop):
                for callback in self.callbacks:
                    callback.on_fit_start(self)
                try:
                    while self.driver.episode < total:
                        if self._stop.get("signum"):
                            path = self.save_checkpoint() if self.run_dir is not None else None
                            raise Interrupted(path, self._stop["signum"])
                        chunk = min(self.every - self.driver.episode % self.every, total - self.driver.episode)
                        for _ in range(chunk):
                            self.driver.run_episode()
                            if self._stop.get("signum"):
                                break
                        self._end_chunk()
                except KeyboardInterrupt:
                    raise Interrupted(None, signal.SIGINT, self._last_checkpoint()) from None
            summary = self.summary()
            if self.run_dir is not None and self.config.trainer.plots:
                from tracetorch.training.plots import plot_returns

                with writing(self.run_dir, self._what_is_safe):
                    plot_returns(self.history, self.run_dir / "curves.png", run_name=self.run_dir.name)
            for callback in self.callbacks:
                callback.on_fit_end(self, summary)
            return summary
        finally:
            self.close()

    def _end_chunk(self) -> None:
        for callback in self.callbacks:  # the jsonl sink writes every episode's record; the console the last one
            callback.on_epoch_end(self, self.history[-1])
        if self.run_dir is not None and self.config.trainer.checkpoint:
            self.save_checkpoint()

    def summary(self) -> dict[str, Any]:
        if not self.history:
            return {"episodes": 0}
        best = max(r["mean_return_100"] for r in self.history)
        return {"episodes": self.history[-1]["episode"], "env_steps": self.history[-1]["env_steps"],
                "updates": self.global_step, "last_return": self.history[-1]["return"],
                "mean_return_100": self.history[-1]["mean_return_100"], "best_mean_return_100": best,
                "run_dir": str(self.run_dir) if self.run_dir else None}

    # ---- checkpoints -------------------------------------------------------------------------

    def _last_checkpoint(self) -> Path | None:
        return ckpt_files.latest_checkpoint(self.run_dir) if self.run_dir is not None else None

    def trainer_state(self) -> dict[str, Any]:
        tensors, meta = self.driver.state_dict()
        return {"progress": {"epoch": self.driver.episode, "batch": 0, "global_step": self.global_step},
                "meter": Meter().to_dict(), "history": self.history, "optimizer": self.optimizer.state_dict(),
                "scheduler": None, "scaler": None, "rng": ckpt_files.capture_rng(),
                "reflect": {"tensors": tensors, "meta": meta}}

    def save_checkpoint(self) -> Path:
        assert self.run_dir is not None
        from tracetorch.builder import model_to_spec

        directory = self.run_dir / "checkpoints" / f"step_{self.driver.episode:08d}"
        config = self.config.to_dict()
        try:
            config["model"] = model_to_spec(self.model).to_dict()
        except (TypeError, ValueError):
            pass
        info = {"epoch": self.driver.episode, "batch": 0, "global_step": self.global_step}
        with writing(directory, self._what_is_safe):
            ckpt_files.save_checkpoint(directory, model=self.model, trainer_state=self.trainer_state(), config=config,
                                       info=info)
            if self.config.trainer.keep_checkpoints:
                ckpt_files.prune_checkpoints(self.run_dir, self.config.trainer.keep_checkpoints)
        return directory

    def _resume(self, where: str) -> Path | None:
        from tracetorch.training.resume import load_weights

        if where == "auto":
            if self.run_dir is None:
                raise ckpt_files.CheckpointError("trainer.resume=auto needs trainer.run_dir (the run to continue)")
            found = ckpt_files.latest_checkpoint(self.run_dir)
            if found is None:
                return None
            where = str(found)
        ckpt = ckpt_files.load_checkpoint(where)
        state = ckpt.trainer
        if "reflect" not in state:
            raise ckpt_files.CheckpointError(f"{where}: not a checkpoint of a trainer.learning=reflect run")
        load_weights(self.model, ckpt, self.config.to_dict(), self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.driver.load_state_dict(state["reflect"]["tensors"], state["reflect"]["meta"])
        self.history = list(state["history"])
        ckpt_files.restore_rng(state["rng"])
        return Path(where)


def _model(spec: dict[str, Any], input_shape: list[int]) -> nn.Module:
    """The policy network: a model spec (or ``file``) sized for the coded observation."""
    import tracetorch

    source: Any = spec.get("file") or {k: v for k, v in spec.items() if k != "input_shape"}
    return tracetorch.build_model(source, input_shape=input_shape)


def evaluate_episodes(checkpoint: str | Path, episodes: int | None = None) -> dict[str, Any]:
    """Greedy evaluation episodes of a REFLECT checkpoint (a run dir or a step_* dir): the mean return."""
    from tracetorch.rl import evaluate_greedy
    from tracetorch.rl.config import RLConfig
    from tracetorch.rl.driver import build_env
    from tracetorch.training.resume import find_checkpoint, load_weights, trusted_config

    ckpt = ckpt_files.load_checkpoint(find_checkpoint(checkpoint))
    config = trusted_config(ckpt, None)
    rl = RLConfig.from_any({**(config.get("rl") or {}), "seed": config.get("seed", 0)})
    env, encoder, _ = build_env(rl)
    env.close()
    model = _model(config["model"], [encoder.num_features])
    load_weights(model, ckpt, config, torch.device("cpu"))
    result = evaluate_greedy(model.eval(), rl, episodes=episodes)
    return {"checkpoint": str(ckpt.path), "episodes": len(result["returns"]), **result}
