"""Training and greedy evaluation loops for REFLECT, ready for a trainer to call.

:class:`ReflectDriver` owns an environment, an observation encoder and a
:class:`~tracetorch.online.ReflectLearner`; :meth:`ReflectDriver.train` runs episodes and
hands one record per episode to a ``metrics`` callback. :meth:`ReflectDriver.state_dict`
exports everything a checkpoint needs besides the weights and the optimizer: tensors
(eligibilities, baseline, counters, hidden states, generator states) and a JSON-ready
dict (episode counter, the environment's RNG state, recent returns); after
:meth:`ReflectDriver.load_state_dict` the run continues exactly as if never stopped.
State is taken between episodes. :func:`evaluate_greedy` runs greedy episodes on a
separate environment and leaves the training state alone.

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.rl import ReflectDriver
    >>> _ = torch.manual_seed(0)
    >>> net = tt.Sequential(torch.nn.Linear(3, 8), tt.snn.LIB(8), torch.nn.Linear(8, 2), tt.snn.LI(2))
    >>> config = {"env": {"id": "tracetorch/DelayedCue-v0", "kwargs": {"delay": 2}}, "seed": 1}
    >>> driver = ReflectDriver(net, torch.optim.Adam(net.parameters(), lr=1e-2), config)
    >>> [r["length"] for r in driver.train(3)]
    [4, 4, 4]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tracetorch.core.model import iter_layers
from tracetorch.online.policy import make_head
from tracetorch.online.reflect import ReflectLearner, RLError
from tracetorch.rl.config import RLConfig
from tracetorch.rl.encoding import ObservationEncoder
from tracetorch.rl.envs import action_kind, make_env, require_gymnasium

__all__ = ["ReflectDriver", "evaluate_greedy", "build_env"]

WINDOW = 100  # episodes in the moving mean return


def build_env(config: RLConfig) -> tuple[Any, ObservationEncoder, int]:
    """The environment, its observation encoder and the number of model outputs, from ``config``."""
    env = make_env(config.env.id, config.env.kwargs, config.env.max_episode_steps)
    num_outputs = action_kind(env.action_space, config.reflect.head)
    options = config.encoder.model_dump()
    e = config.env
    encoder = ObservationEncoder(env.observation_space, e.population, e.bounds, scale=e.scale, **options)
    return env, encoder, num_outputs


def _zero_states(model: nn.Module) -> None:
    for _, layer in iter_layers(model):
        layer.zero_states()


def check_model(model: nn.Module, num_features: int, num_outputs: int) -> None:
    """Probe ``model`` with one zero observation; :class:`RLError` when the sizes do not fit."""
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, num_features))
    except (RuntimeError, ValueError) as err:
        raise RLError(f"the model does not take the encoded observation ({num_features} features): {err}") from None
    finally:
        _zero_states(model)
    if out.ndim != 2 or out.shape[1] != num_outputs:
        raise RLError(f"the model's readout has shape {tuple(out.shape)}, but the environment's action space needs "
                      f"[1, {num_outputs}] outputs")


def _env_action(action: Tensor, space: Any) -> Any:
    gym = require_gymnasium()
    if isinstance(space, gym.spaces.Discrete):
        return int(action.reshape(-1)[0])
    return np.clip(action.reshape(-1).numpy().astype(space.dtype), space.low, space.high)


class ReflectDriver:
    """Episodes of REFLECT training (see the module docstring).

    ``config`` is an :class:`~tracetorch.rl.config.RLConfig` or a dict of one. ``metrics``
    gets, after every episode, ``{"episode", "return", "length", "mean_return_100",
    "baseline", "env_steps", "updates"}`` plus ``"correct"`` when the environment reports it.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: RLConfig | dict[str, Any],
        metrics: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = RLConfig.from_any(config)
        self.env, self.encoder, num_outputs = build_env(self.config)
        check_model(model, self.encoder.num_features, num_outputs)
        r = self.config.reflect
        head = make_head(r.head, **self.config.head_options())
        self.learner = ReflectLearner(
            model, optimizer, head, gamma=r.gamma, baseline_decay=r.baseline_decay, update_every=r.update_every,
            entropy_coef=r.entropy_coef, clip_grad_norm=r.clip_grad_norm, trace=r.trace, seed=self.config.seed,
        )
        self.metrics = metrics
        self.generator = torch.Generator().manual_seed(self.config.seed + 1)  # the spike encoder's draws
        self.episode = 0
        self.env_steps = 0
        self.recent: deque[float] = deque(maxlen=WINDOW)

    def run_episode(self) -> dict[str, Any]:
        """One training episode; returns (and reports) its record."""
        obs, _ = self.env.reset(seed=self.config.seed if self.episode == 0 else None)
        total, length, info = 0.0, 0, {}
        done = False
        while not done:
            action = self.learner.act(self.encoder(obs, self.generator), sequence=True)
            obs, r, terminated, truncated, info = self.env.step(_env_action(action, self.env.action_space))
            self.learner.reward(float(r), bool(terminated), bool(truncated))
            total += float(r)
            length += 1
            done = bool(terminated or truncated)
        self.episode += 1
        self.env_steps += length
        self.recent.append(total)
        record = {
            "episode": self.episode, "return": total, "length": length,
            "mean_return_100": sum(self.recent) / len(self.recent), "baseline": self.learner.baseline,
            "env_steps": self.env_steps, "updates": self.learner.updates,
        }
        if "correct" in info:
            record["correct"] = bool(info["correct"])
        if self.metrics is not None:
            self.metrics(record)
        return record

    def train(self, episodes: int | None = None) -> list[dict[str, Any]]:
        """``episodes`` more episodes (default: the config's ``episodes``); their records."""
        count = self.config.episodes if episodes is None else episodes
        return [self.run_episode() for _ in range(count)]

    # checkpoints --------------------------------------------------------------------

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``(tensors, meta)``: safetensors-ready tensors and a JSON-ready dict (see the module docstring)."""
        tensors = {f"learner.{k}": v for k, v in self.learner.state_dict().items()}
        tensors["encoder_generator"] = self.generator.get_state()
        rng = self.env.unwrapped.np_random.bit_generator.state
        meta = {"episode": self.episode, "env_steps": self.env_steps, "recent_returns": list(self.recent),
                "env_rng": rng, "env_id": self.config.env.id}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after loading the weights and the optimizer); checked before anything changes."""
        problems = [f"missing meta key {k!r}" for k in ("episode", "env_steps", "recent_returns", "env_rng", "env_id")
                    if k not in meta]
        if "encoder_generator" not in tensors:
            problems.append("missing tensor 'encoder_generator'")
        if not problems and meta["env_id"] != self.config.env.id:
            problems.append(f"the state is of environment {meta['env_id']!r}, this run uses {self.config.env.id!r}")
        if not problems:
            try:
                bit_generator = getattr(np.random, meta["env_rng"]["bit_generator"])()
                bit_generator.state = meta["env_rng"]
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                problems.append(f"env_rng is not a numpy bit generator state: {err}")
        if problems:
            raise ValueError("cannot load the REFLECT driver state: " + "; ".join(problems))
        self.learner.load_state_dict({k[len("learner."):]: v for k, v in tensors.items() if k.startswith("learner.")})
        self.generator.set_state(tensors["encoder_generator"].clone())
        self.env.unwrapped.np_random = np.random.Generator(bit_generator)
        self.episode, self.env_steps = int(meta["episode"]), int(meta["env_steps"])
        self.recent = deque((float(v) for v in meta["recent_returns"]), maxlen=WINDOW)


def evaluate_greedy(
    model: nn.Module, config: RLConfig | dict[str, Any], episodes: int | None = None, seed: int | None = None,
) -> dict[str, Any]:
    """Greedy episodes (the most likely action; the mean for gaussian) on a fresh environment.

    Returns ``{"mean_return", "returns", "lengths"}`` (and ``"success_rate"`` when the
    environment reports ``correct``). Hidden states are zeroed before and after each
    episode, so a training run at an episode boundary is left as it was.
    """
    cfg = RLConfig.from_any(config)
    env, encoder, num_outputs = build_env(cfg)
    check_model(model, encoder.num_features, num_outputs)
    head = make_head(cfg.reflect.head, **cfg.head_options())
    generator = torch.Generator().manual_seed(cfg.seed + 2 if seed is None else seed)
    count = cfg.eval_episodes if episodes is None else episodes
    returns, lengths, correct = [], [], []
    with torch.no_grad():
        for index in range(count):
            _zero_states(model)
            obs, _ = env.reset(seed=(cfg.seed + 10_000 if seed is None else seed) if index == 0 else None)
            total, length, done, info = 0.0, 0, False, {}
            while not done:
                x = encoder(obs, generator)
                out = torch.stack([model(x_t) for x_t in x.unbind(0)]).mean(0)
                obs, r, terminated, truncated, info = env.step(_env_action(head.greedy(out), env.action_space))
                if not math.isfinite(float(r)):
                    raise RLError(f"reward is {float(r)} in evaluation episode {index}, step {length}")
                total += float(r)
                length += 1
                done = bool(terminated or truncated)
            returns.append(total)
            lengths.append(length)
            if "correct" in info:
                correct.append(bool(info["correct"]))
    _zero_states(model)
    result: dict[str, Any] = {"mean_return": sum(returns) / len(returns), "returns": returns, "lengths": lengths}
    if correct:
        result["success_rate"] = sum(correct) / len(correct)
    return result
