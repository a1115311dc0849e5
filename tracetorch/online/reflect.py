"""REFLECT: a trace-based policy gradient for spiking agents, constant memory per step.

A REINFORCE estimator run forwards in time (OLPOMDP, Baxter & Bartlett 2001) on top of
trace learning: every step the gradient of the log-probability of the sampled action,
``g_t = d log pi(a_t | s_t) / dw``, is formed from the presynaptic traces that
:func:`~tracetorch.online.enable_trace_learning` keeps (no backpropagation through time),
and folded into one eligibility trace per parameter (local eligibility, as in e-prop and
three-factor rules)::

    e_t = gamma * e_(t-1) + g_t                       # eligibility; discounting through its decay
    delta_t = r_t - b_t   (- gamma * b_t / (1 - gamma) when the episode terminates)
    dw = lr * delta_t * e_t                           # the global third factor times the eligibility
    b_(t+1) = rho * b_t + (1 - rho) * r_t             # reward baseline: running average (decay rho)

``b / (1 - gamma)`` is the value the running average implies; a termination loses it, so
the terminal step carries ``-gamma * b / (1 - gamma)`` (a truncated episode does not).
Summed over an episode this is exactly REINFORCE with the constant baseline
``V = b / (1 - gamma)`` on the ``gamma``-discounted returns,
``sum_t (G_t - V) g_t`` (the backward view of the returns ``G_t``), and so an unbiased
estimate of the policy gradient for any baseline that does not depend on the current
step's action (the current reward enters ``b`` only after it was used). On CartPole,
where every reward is 1, all the signal is in that terminal term.

The optimizer receives ``-delta_t * e_t`` as the gradient (it minimizes), accumulated
and applied every ``update_every`` steps (``None``: at the end of each episode), so any
``torch.optim`` optimizer works; plain SGD applies ``dw`` above exactly. States are
detached after every step, eligibilities and hidden states are reset at episode ends:
memory and time per step do not depend on the episode length.

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.online import ReflectLearner
    >>> _ = torch.manual_seed(0)
    >>> net = tt.Sequential(torch.nn.Linear(3, 8), tt.snn.LIB(8), torch.nn.Linear(8, 2), tt.snn.LI(2))
    >>> learner = ReflectLearner(net, torch.optim.SGD(net.parameters(), lr=0.1), gamma=0.9, seed=0)
    >>> action = learner.act(torch.rand(1, 3))
    >>> action.shape, round(learner.reward(1.0, terminated=True), 6), learner.episodes  # -gamma * b / (1 - gamma)
    (torch.Size([1]), -9.0, 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tracetorch.core.model import Model, iter_layers
from tracetorch.online.policy import PolicyHead, make_head
from tracetorch.online.trace import TraceSynapse, enable_trace_learning

__all__ = ["ReflectLearner", "RLError"]


class RLError(ValueError):
    """A problem with a reinforcement-learning input (reward, action space, environment), named in the message."""


def _check_fraction(name: str, value: float) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"ReflectLearner: {name} must be a float in [0, 1), got {value!r}")
    return float(value)


class ReflectLearner:
    """Online policy-gradient learner (see the module docstring).

    ``model`` maps one timestep ``[1, ...]`` to a readout ``[1, outputs]`` that ``head``
    (``"categorical"``, ``"gaussian"`` or a :class:`~tracetorch.online.policy.PolicyHead`)
    turns into actions. ``trace=True`` calls :func:`~tracetorch.online.enable_trace_learning`
    on the model (parameters are kept, so the optimizer built before still works);
    ``trace=False`` uses the one-step gradient (a model with no spiking layer needs nothing
    more). ``gamma``: eligibility decay (the discount); ``baseline_decay``: ``rho`` of the
    running-average baseline; ``entropy_coef``: adds ``coef * d entropy / dw`` each step;
    ``clip_grad_norm``: clips the accumulated update. ``seed`` seeds the generator actions
    are drawn from (saved in :meth:`state_dict`).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        head: str | PolicyHead = "categorical",
        gamma: float = 0.95,
        baseline_decay: float = 0.99,
        update_every: int | None = 1,
        entropy_coef: float = 0.0,
        clip_grad_norm: float | None = None,
        trace: bool = True,
        seed: int = 0,
    ) -> None:
        self.gamma = _check_fraction("gamma", gamma)
        self.baseline_decay = _check_fraction("baseline_decay", baseline_decay)
        if update_every is not None and (isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1):
            raise ValueError(f"ReflectLearner: update_every must be a positive int or None, got {update_every!r}")
        if isinstance(entropy_coef, bool) or not isinstance(entropy_coef, (int, float)) or not entropy_coef >= 0:
            raise ValueError(f"ReflectLearner: entropy_coef must be >= 0, got {entropy_coef!r}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"ReflectLearner: clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
        if trace and not any(isinstance(layer, TraceSynapse) for _, layer in iter_layers(model)):
            try:
                enable_trace_learning(model)
            except ValueError as err:
                raise ValueError(f"ReflectLearner: {err}; or pass trace=False (one-step gradients, e.g. a model "
                                 f"without spiking layers)") from None
        self.model = model
        self.optimizer = optimizer
        self.head = make_head(head)
        self.update_every = update_every
        self.entropy_coef = float(entropy_coef)
        self.clip_grad_norm = clip_grad_norm
        self.generator = torch.Generator().manual_seed(int(seed))
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if not self.params:
            raise ValueError("ReflectLearner: the model has no trainable parameters")
        self.eligibility = {name: torch.zeros_like(p) for name, p in self.params.items()}
        self.baseline: float | None = None
        self.steps = 0
        self.updates = 0
        self.episodes = 0
        self.episode_steps = 0
        self._acted = False
        self._pending = False
        self._layers = [layer for _, layer in iter_layers(model)]

    # acting -------------------------------------------------------------------------

    def _readout(self, x: Tensor, sequence: bool) -> Tensor:
        if not sequence:
            return self.model(x)
        return torch.stack([self.model(x_t) for x_t in x.unbind(0)]).mean(0)

    def act(self, x: Tensor, sequence: bool = False) -> Tensor:
        """Sample an action for one observation ``x`` ``[1, ...]`` and fold its score into the eligibility.

        With ``sequence=True`` ``x`` is ``[T, 1, ...]`` (several network steps per
        environment step); the readout is the mean of the T outputs. Returns the action
        ``[1]`` (categorical) or ``[1, dims]`` (gaussian). Call :meth:`reward` next.
        """
        if self._acted:
            raise RuntimeError("ReflectLearner.act: call reward() for the previous action first")
        out = self._readout(x, sequence)
        self.head.check_outputs(out)
        if out.shape[0] != 1:
            raise ValueError(f"ReflectLearner.act: one environment at a time (batch 1), got a readout {tuple(out.shape)}")
        if not torch.isfinite(out).all():
            raise RLError(f"ReflectLearner.act: the model's readout is not finite at episode {self.episodes}, "
                          f"step {self.episode_steps}: {out.detach().flatten().tolist()}")
        action = self.head.sample(out, self.generator)
        names = list(self.params)
        tensors = list(self.params.values())
        logp = self.head.log_prob(out, action).sum()
        if self.entropy_coef > 0:
            entropy = self.head.entropy(out).sum()
            if entropy.requires_grad:
                for p, g in zip(tensors, torch.autograd.grad(entropy, tensors, retain_graph=True, allow_unused=True)):
                    if g is not None:
                        self._grad(p).sub_(self.entropy_coef * g)
                self._pending = True
        if logp.requires_grad:
            grads = torch.autograd.grad(logp, tensors, allow_unused=True)
            for name, g in zip(names, grads):
                e = self.eligibility[name].mul_(self.gamma)
                if g is not None:
                    e.add_(g)
        else:
            for e in self.eligibility.values():
                e.mul_(self.gamma)
        for layer in self._layers:
            layer.detach_states()
        self._acted = True
        return action

    @staticmethod
    def _grad(p: Tensor) -> Tensor:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return p.grad

    # learning -----------------------------------------------------------------------

    def reward(self, r: float, terminated: bool = False, truncated: bool = False) -> float:
        """Credit reward ``r`` for the last action; returns ``delta`` (what multiplied the eligibility).

        ``terminated``: the episode ended in a terminal state (its future is lost);
        ``truncated``: it was cut short (a time limit). Either ends the episode:
        eligibilities and hidden states are reset, and with ``update_every=None`` the
        update is applied. A non-finite reward raises :class:`RLError` before anything changes.
        """
        if not self._acted:
            raise RuntimeError("ReflectLearner.reward: call act() first")
        if isinstance(r, Tensor):
            r = float(r.detach().reshape(-1)[0]) if r.numel() == 1 else r
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            where = f"episode {self.episodes}, step {self.episode_steps}"
            raise RLError(f"reward must be a number, got {type(r).__name__} at {where}")
        r = float(r)
        if not math.isfinite(r):
            raise RLError(f"reward is {r} at episode {self.episodes}, step {self.episode_steps}: "
                          f"a non-finite reward is never applied (check the environment's reward)")
        b = r if self.baseline is None else self.baseline
        delta = r - b
        if terminated:
            delta -= self.gamma * b / (1.0 - self.gamma)
        if delta != 0.0:
            for name, p in self.params.items():
                self._grad(p).add_(self.eligibility[name], alpha=-delta)
            self._pending = True
        self.baseline = self.baseline_decay * b + (1.0 - self.baseline_decay) * r
        self._acted = False
        self.steps += 1
        self.episode_steps += 1
        if self.update_every is not None and self.steps % self.update_every == 0:
            self.flush()
        if terminated or truncated:
            self.end_episode()
        return delta

    def step(
        self, x: Tensor, env_step: Callable[[Tensor], tuple[float, bool, bool]], sequence: bool = False,
    ) -> tuple[Tensor, float, bool]:
        """:meth:`act`, then ``env_step(action) -> (r, terminated, truncated)``, then :meth:`reward`.

        Returns ``(action, r, done)``.
        """
        action = self.act(x, sequence)
        r, terminated, truncated = env_step(action)
        self.reward(r, terminated, truncated)
        return action, r, bool(terminated or truncated)

    def flush(self) -> bool:
        """Apply the accumulated update now; False when there was none."""
        if not self._pending:
            return False
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(list(self.params.values()), self.clip_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.updates += 1
        self._pending = False
        return True

    def end_episode(self) -> None:
        """Episode boundary: apply a pending update if ``update_every=None``, zero eligibilities and states."""
        if self._acted:
            raise RuntimeError("ReflectLearner.end_episode: the last action got no reward() yet")
        if self.update_every is None:
            self.flush()
        for e in self.eligibility.values():
            e.zero_()
        for layer in self._layers:
            layer.zero_states()
        self.episodes += 1
        self.episode_steps = 0

    # checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Everything but the weights and the optimizer: eligibilities, pending update, baseline,
        counters, the action generator and the model's hidden states (all tensors)."""
        if self._acted:
            raise RuntimeError("ReflectLearner.state_dict: the last action got no reward() yet")
        out = {f"eligibility.{n}": e.detach().clone() for n, e in self.eligibility.items()}
        for name, p in self.params.items():
            out[f"grad.{name}"] = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        out["baseline"] = torch.tensor([] if self.baseline is None else [self.baseline], dtype=torch.float64)
        out["counters"] = torch.tensor([self.steps, self.updates, self.episodes, self.episode_steps, int(self._pending)])
        out["generator"] = self.generator.get_state()
        if isinstance(self.model, Model):
            out.update({f"states.{k}": v for k, v in self.model.save_states().items()})
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict`; every key is checked first and nothing changes on an error."""
        expected = set(self.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        problems = [f"missing: {', '.join(missing)}"] * bool(missing)
        problems += [f"unexpected: {', '.join(unexpected)}"] * bool(unexpected)
        for name, p in self.params.items():
            for key in (f"eligibility.{name}", f"grad.{name}"):
                if key in state and tuple(state[key].shape) != tuple(p.shape):
                    problems.append(f"{key}: shape {tuple(state[key].shape)}, expected {tuple(p.shape)}")
        if "counters" in state and tuple(state["counters"].shape) != (5,):
            problems.append(f"counters: shape {tuple(state['counters'].shape)}, expected (5,)")
        if problems:
            raise ValueError("cannot load the REFLECT learner state: " + "; ".join(problems))
        hidden = {k[len("states."):]: v for k, v in state.items() if k.startswith("states.")}
        if isinstance(self.model, Model):
            self.model.load_states(hidden)
        for name, p in self.params.items():
            self.eligibility[name].copy_(state[f"eligibility.{name}"])
            self._grad(p).copy_(state[f"grad.{name}"])
        baseline = state["baseline"]
        self.baseline = float(baseline[0]) if baseline.numel() else None
        self.steps, self.updates, self.episodes, self.episode_steps, pending = (int(v) for v in state["counters"].tolist())
        self._pending = bool(pending)
        self.generator.set_state(state["generator"].clone())
        self._acted = False
