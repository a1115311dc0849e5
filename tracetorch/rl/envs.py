"""Environments: Gymnasium ids, checked, plus the project's own delayed-cue memory task.

:func:`make_env` builds an environment from its Gymnasium id and checks its action space
against the policy head; every problem (``gymnasium`` not installed, an unknown id, an
unsupported space) is one :class:`~tracetorch.online.reflect.RLError` naming it.

:class:`DelayedCueEnv` (registered as ``tracetorch/DelayedCue-v0``, no download) is a
T-maze in time: the first observation shows a cue (left or right), then ``delay`` blank
observations follow, then a "go" observation; the action taken on "go" is rewarded
(``1`` if it matches the cue, else ``wrong_reward``) and the episode ends. Actions before
"go" do nothing. Observations are ``[cue_left, cue_right, go]`` in ``{0, 1}``, plus
Gaussian noise of standard deviation ``noise`` on every channel and step (from the
environment's RNG), so that a trace of the cue too faint to stand out of it is no memory.

Example:
    >>> env = make_env("tracetorch/DelayedCue-v0", {"delay": 2})
    >>> obs, _ = env.reset(seed=0); obs.tolist()
    [0.0, 1.0, 0.0]
    >>> [env.step(0)[0].tolist() for _ in range(3)][-1]
    [0.0, 0.0, 1.0]
    >>> env.step(1)[1:4]  # reward, terminated, truncated: the cue said right
    (1.0, True, False)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tracetorch.online.reflect import RLError
from tracetorch.suggest import close_matches, did_you_mean

__all__ = ["DelayedCueEnv", "make_env", "require_gymnasium", "MissingGymnasium", "DELAYED_CUE_ID", "action_kind"]

DELAYED_CUE_ID = "tracetorch/DelayedCue-v0"


class MissingGymnasium(RLError, ImportError):
    """``gymnasium`` is not installed (``pip install "tracetorch[rl]"``)."""


def require_gymnasium() -> Any:
    """Import ``gymnasium`` (registering the project's environments) or raise :class:`MissingGymnasium`."""
    try:
        import gymnasium
    except ImportError:
        raise MissingGymnasium(
            "reinforcement learning needs the gymnasium package, which is not installed: pip install \"tracetorch[rl]\""
        ) from None
    if DELAYED_CUE_ID not in gymnasium.registry:
        gymnasium.register(id=DELAYED_CUE_ID, entry_point=f"{__name__}:DelayedCueEnv")
    return gymnasium


try:
    import gymnasium as _gym

    _EnvBase: Any = _gym.Env
except ImportError:  # the class is still importable; make_env reports the missing package
    _EnvBase = object


class DelayedCueEnv(_EnvBase):  # type: ignore[misc, valid-type]
    """Cue, ``delay`` blank steps, go: reward for the action on "go" matching the cue (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, delay: int = 10, wrong_reward: float = 0.0, noise: float = 0.0) -> None:
        gym = require_gymnasium()
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise RLError(f"{DELAYED_CUE_ID}: delay must be an int >= 0, got {delay!r}")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < float("inf"):
            raise RLError(f"{DELAYED_CUE_ID}: noise must be a finite number >= 0, got {noise!r}")
        self.delay = delay
        self.wrong_reward = float(wrong_reward)
        self.noise = float(noise)
        low, high = (0.0, 1.0) if self.noise == 0 else (-np.inf, np.inf)
        self.observation_space = gym.spaces.Box(low, high, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._cue = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3, np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        elif self._t == self.delay + 1:
            obs[2] = 1.0
        if self.noise > 0:
            obs += self.np_random.normal(0.0, self.noise, 3).astype(np.float32)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(2))
        self._t = 0
        return self._obs(), {"cue": self._cue}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise RLError(f"{DELAYED_CUE_ID}: action must be 0 or 1, got {action!r}")
        if self._t == self.delay + 1:
            correct = int(action) == self._cue
            return self._obs(), 1.0 if correct else self.wrong_reward, True, False, {"correct": correct}
        self._t += 1
        return self._obs(), 0.0, False, False, {}


def action_kind(space: Any, head: str) -> int:
    """The number of outputs the model needs for ``space`` under ``head``; :class:`RLError` if unsupported."""
    gym = require_gymnasium()
    if head == "categorical":
        if isinstance(space, gym.spaces.Discrete):
            return int(space.n)
        raise RLError(f"the categorical policy needs a Discrete action space, but the environment has {space} "
                      f"(use policy head 'gaussian' for a 1-D Box)")
    if head == "gaussian":
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return int(space.shape[0])
        raise RLError(f"the gaussian policy needs a 1-D Box action space, but the environment has {space} "
                      f"(use policy head 'categorical' for a Discrete one)")
    raise RLError(f"unknown policy head {head!r} (known: categorical, gaussian)")


def make_env(env_id: str, kwargs: dict[str, Any] | None = None, max_episode_steps: int | None = None) -> Any:
    """``gymnasium.make(env_id, **kwargs)`` with one clear :class:`RLError` for an unknown id or bad keywords."""
    gym = require_gymnasium()
    if not isinstance(env_id, str) or not env_id:
        raise RLError(f"env id must be a non-empty string, got {env_id!r}")
    if env_id not in gym.registry:
        close = did_you_mean(close_matches(env_id, list(gym.registry), n=3))
        hint = f"; {close}" if close else " (no similar id is registered)"
        raise RLError(f"environment {env_id!r} does not exist in gymnasium{hint}")
    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps, **(kwargs or {}))
    except RLError:
        raise
    except (TypeError, ValueError, gym.error.Error) as err:
        raise RLError(f"cannot make environment {env_id!r} with {kwargs or {}}: {err}") from None
