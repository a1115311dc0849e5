"""The reinforcement-learning configuration, validated once by Pydantic.

Sections: ``env`` (Gymnasium id, its keywords, observation coding), ``encoder`` (a spike
encoder of :mod:`tracetorch.data.encoders`, ``num_steps`` network steps per environment
step), ``reflect`` (the learner's options, see
:class:`~tracetorch.online.ReflectLearner`), plus ``seed``, ``episodes`` and
``eval_episodes``. Every problem is reported at once with its dotted path.

Example:
    >>> cfg = RLConfig.from_any({"env": {"id": "CartPole-v1", "population": 6}, "reflect": {"gamma": 0.9}})
    >>> cfg.env.population, cfg.reflect.gamma, cfg.encoder.name
    (6, 0.9, 'direct')
    >>> RLConfig.from_any({"reflect": {"gama": 0.9}})
    Traceback (most recent call last):
    ...
    tracetorch.online.reflect.RLError: invalid RL config: reflect.gama: Extra inputs are not permitted
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tracetorch.online.reflect import RLError

__all__ = ["RLConfig", "EnvSection", "EncoderSection", "ReflectSection"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvSection(_Closed):
    """``id`` (Gymnasium id), ``kwargs`` for ``gymnasium.make``, ``max_episode_steps`` (null: the env's own),
    ``population`` (neurons per observation dimension; null: raw values) and ``bounds`` (one ``[low, high]``
    per dimension; null: the observation space's), ``scale`` (an input gain on the coded observation)."""

    id: str = "CartPole-v1"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    max_episode_steps: int | None = Field(None, ge=1)
    population: int | None = Field(None, ge=2)
    bounds: list[tuple[float, float]] | None = None
    scale: float = Field(1.0, gt=0)


class EncoderSection(BaseModel):
    """``name`` (direct, rate, latency) and ``num_steps`` per environment step; other keys go to the encoder."""

    model_config = ConfigDict(extra="allow")
    name: str = "direct"
    num_steps: int = Field(1, ge=1)


class ReflectSection(_Closed):
    """The learner's options (:class:`~tracetorch.online.ReflectLearner`) and the head's."""

    head: Literal["categorical", "gaussian"] = "categorical"
    temperature: float = Field(1.0, gt=0)
    std: float = Field(0.5, gt=0)
    gamma: float = Field(0.95, ge=0, lt=1)
    baseline_decay: float = Field(0.99, ge=0, lt=1)
    update_every: int | None = Field(1, ge=1)
    entropy_coef: float = Field(0.0, ge=0)
    clip_grad_norm: float | None = Field(None, gt=0)
    trace: bool = True


class RLConfig(_Closed):
    """A whole REFLECT run: ``seed``, ``episodes``, ``eval_episodes`` and the three sections."""

    seed: int = 0
    episodes: int = Field(500, ge=1)
    eval_episodes: int = Field(10, ge=1)
    env: EnvSection = EnvSection()
    encoder: EncoderSection = EncoderSection()
    reflect: ReflectSection = ReflectSection()

    @classmethod
    def from_any(cls, config: Any) -> RLConfig:
        """Validate a dict, an OmegaConf ``DictConfig`` or an ``RLConfig``; :class:`RLError` lists every problem."""
        if isinstance(config, RLConfig):
            return config
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(config, DictConfig):
                config = OmegaConf.to_container(config, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        if not isinstance(config, dict):
            raise RLError(f"an RL config must be a dict, got {type(config).__name__}")
        try:
            return cls.model_validate(config)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            raise RLError(f"invalid RL config: {problems}") from None

    def head_options(self) -> dict[str, float]:
        """The options of the chosen head."""
        return {"temperature": self.reflect.temperature} if self.reflect.head == "categorical" else {"std": self.reflect.std}
