"""Reinforcement learning with REFLECT: environments, observation coding and a training driver.

* :mod:`tracetorch.rl.envs`: :func:`make_env` (Gymnasium ids, checked) and the delayed-cue
  memory task ``tracetorch/DelayedCue-v0``;
* :mod:`tracetorch.rl.encoding`: population coding and :class:`ObservationEncoder`;
* :mod:`tracetorch.rl.config`: :class:`RLConfig`, the validated configuration;
* :mod:`tracetorch.rl.driver`: :class:`ReflectDriver` (training episodes, checkpointable
  state) and :func:`evaluate_greedy`.

The learner itself, :class:`~tracetorch.online.ReflectLearner`, lives in
:mod:`tracetorch.online` and needs no Gymnasium; this package needs the ``[rl]`` extra
(``pip install "tracetorch[rl]"``): without it, building an environment raises one
:class:`~tracetorch.rl.envs.MissingGymnasium` error saying so.

Example:
    >>> from tracetorch.rl import RLConfig
    >>> RLConfig.from_any({"env": {"id": "tracetorch/DelayedCue-v0"}}).env.id
    'tracetorch/DelayedCue-v0'
"""

from tracetorch.online.reflect import RLError
from tracetorch.rl.config import RLConfig
from tracetorch.rl.driver import ReflectDriver, build_env, evaluate_greedy
from tracetorch.rl.encoding import ObservationEncoder, population_code
from tracetorch.rl.envs import DELAYED_CUE_ID, DelayedCueEnv, MissingGymnasium, make_env, require_gymnasium

__all__ = [
    "RLError", "RLConfig", "ReflectDriver", "build_env", "evaluate_greedy", "ObservationEncoder", "population_code",
    "DELAYED_CUE_ID", "DelayedCueEnv", "MissingGymnasium", "make_env", "require_gymnasium",
]
