"""REFLECT's estimator: the statistics of its updates against analytic policy gradients (no Gymnasium needed)."""

from __future__ import annotations

import math

import pytest
import torch

import tracetorch as tt
from tracetorch.online import CategoricalHead, GaussianHead, ReflectLearner, RLError


class Recorder(torch.optim.Optimizer):
    """An optimizer that records each update direction ``-grad`` (= dw / lr) and leaves the weights alone."""

    def __init__(self, params):
        super().__init__(params, {})
        self.updates: list[list[torch.Tensor]] = []

    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        self.updates.append([-p.grad.detach().clone() for g in self.param_groups for p in g["params"]])


def bandit_policy(seed: int = 0) -> tt.Sequential:
    torch.manual_seed(seed)
    net = tt.Sequential(torch.nn.Linear(3, 3), tt.snn.LI(3, beta=0.5, learn_beta=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.5, -0.3, 0.2], [-0.4, 0.6, 0.1], [0.2, 0.1, -0.5]]))
        net[0].bias.copy_(torch.tensor([0.1, -0.2, 0.0]))
    return net


REWARDS = 4.0 * torch.eye(3)  # R[context, action]: the action that names the context pays


def analytic_gradient(net: tt.Sequential) -> list[torch.Tensor]:
    """d/dw of J = mean_x sum_a pi(a|x) R[x, a] for pi = softmax(W x + b), contexts one-hot and uniform."""
    w, b = net[0].weight.detach(), net[0].bias.detach()
    grad_w, grad_b = torch.zeros_like(w), torch.zeros_like(b)
    for x in range(3):
        pi = torch.softmax(w[:, x] + b, 0)
        advantage = pi * (REWARDS[x] - (pi * REWARDS[x]).sum())  # d J_x / d logits
        grad_w[:, x] += advantage / 3
        grad_b += advantage / 3
    return [grad_w, grad_b]


def test_mean_update_matches_the_analytic_policy_gradient():
    net = bandit_policy()
    recorder = Recorder(net.parameters())
    learner = ReflectLearner(net, recorder, gamma=0.0, baseline_decay=0.5, update_every=None, seed=1)
    contexts = torch.randint(0, 3, (5000,), generator=torch.Generator().manual_seed(2))
    for x in contexts.tolist():
        action = learner.act(torch.nn.functional.one_hot(torch.tensor([x]), 3).float())
        if learner.reward(float(REWARDS[x, int(action)]), terminated=True) == 0.0:  # delta = 0: no update is applied
            recorder.updates.append([torch.zeros_like(p) for p in net.parameters()])
    assert len(recorder.updates) == len(contexts)
    strong = 0
    for index, expected in enumerate(analytic_gradient(net)):
        samples = torch.stack([u[index] for u in recorder.updates])
        mean, se = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
        z = (mean - expected) / se
        assert z.abs().max() < 4.0, (mean, expected, se)
        # the power to catch a wrong sign, or a baseline that leaks the current reward (it scales the mean by rho = 0.5)
        mask = expected.abs() > 10 * se
        strong += int(mask.sum())
        for wrong in (-expected, 0.5 * expected):
            assert (((mean - wrong) / se)[mask].abs() > 4.0).all()
    assert strong >= 2


def test_log_probability_term_is_the_score_of_the_sampled_action():
    # a wrong log-probability term (the probability itself, or another action's) breaks this equality
    net = bandit_policy()
    recorder = Recorder(net.parameters())
    learner = ReflectLearner(net, recorder, gamma=0.0, baseline_decay=0.9, update_every=None, seed=3)
    learner.baseline = 1.0
    x = torch.tensor([[0.0, 1.0, 0.0]])
    action = int(learner.act(x))
    delta = learner.reward(2.5, terminated=True)
    assert delta == pytest.approx(1.5)
    pi = torch.softmax(net[0].weight.detach()[:, 1] + net[0].bias.detach(), 0)
    score_logits = torch.nn.functional.one_hot(torch.tensor(action), 3).float() - pi
    torch.testing.assert_close(recorder.updates[0][0], 1.5 * torch.outer(score_logits, x[0]))
    torch.testing.assert_close(recorder.updates[0][1], 1.5 * score_logits)
    assert learner.baseline == pytest.approx(0.9 * 1.0 + 0.1 * 2.5)


def test_episode_update_is_reinforce_with_the_implied_value_baseline():
    """Rewards all 1 (CartPole): the summed update equals sum_t (G_t - V) d log pi_t / dw, V = b / (1 - gamma),
    with the scores from full BPTT (exact for Linear -> LI, where trace learning is exact)."""
    gamma, steps = 0.8, 12
    torch.manual_seed(0)
    net = tt.Sequential(torch.nn.Linear(4, 2), tt.snn.LI(2, beta=0.7, beta_rank=0, learn_beta=False))
    reference = tt.Sequential(torch.nn.Linear(4, 2), tt.snn.LI(2, beta=0.7, beta_rank=0, learn_beta=False))
    reference.load_state_dict(net.state_dict())
    recorder = Recorder(net.parameters())
    learner = ReflectLearner(net, recorder, gamma=gamma, baseline_decay=0.9, update_every=None, seed=4)
    learner.baseline = 1.0
    xs = torch.randn(steps, 1, 4, generator=torch.Generator().manual_seed(5))
    actions = []
    for t in range(steps):
        actions.append(int(learner.act(xs[t])))
        learner.reward(1.0, terminated=t == steps - 1)
    value = 1.0 / (1 - gamma)
    objective = torch.zeros(())
    for t in range(steps):
        logp = torch.log_softmax(reference(xs[t]), -1)[0, actions[t]]
        g_t = sum(gamma ** (k - t) for k in range(t, steps))
        objective = objective + (g_t - value) * logp
    expected = torch.autograd.grad(objective, list(reference.parameters()))
    for got, want in zip(recorder.updates[0], expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_eligibility_decays_by_gamma_and_resets_at_episode_end():
    torch.manual_seed(0)
    net = tt.Sequential(torch.nn.Linear(2, 2), tt.snn.LI(2, learn_beta=False))
    learner = ReflectLearner(net, torch.optim.SGD(net.parameters(), lr=0.0), gamma=0.5, update_every=None, seed=0)
    learner.act(torch.ones(1, 2))
    first = learner.eligibility["0.bias"].clone()
    learner.reward(0.0)
    learner.act(torch.zeros(1, 2))
    # the bias score is onehot(a) - pi: the eligibility is 0.5 * first + that
    assert not torch.equal(learner.eligibility["0.bias"], first)
    assert learner.eligibility["0.bias"].sum().abs() < 1e-6 + 0.5 * first.sum().abs()  # each score sums to zero
    learner.reward(0.0, truncated=True)
    assert all((e == 0).all() for e in learner.eligibility.values()) and learner.episodes == 1
    assert all(layer.states is not None and all(v is None for _, v in layer.states()) for layer in net.layers().values())


def test_non_finite_reward_is_refused_and_changes_nothing():
    torch.manual_seed(0)
    net = tt.Sequential(torch.nn.Linear(2, 8), tt.snn.LIB(8), torch.nn.Linear(8, 2), tt.snn.LI(2))
    learner = ReflectLearner(net, torch.optim.SGD(net.parameters(), lr=0.1), seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    learner.act(torch.rand(1, 2))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(RLError, match=r"reward is (nan|inf) at episode 0, step 0"):
            learner.reward(bad)
    assert learner.baseline is None and learner.steps == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_learner_state_round_trip_continues_identically():
    def make():
        torch.manual_seed(0)
        net = tt.Sequential(torch.nn.Linear(3, 8), tt.snn.RLIB(8), torch.nn.Linear(8, 2), tt.snn.LI(2))
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        return net, opt, ReflectLearner(net, opt, gamma=0.9, update_every=3, seed=7)

    xs = torch.rand(40, 1, 3, generator=torch.Generator().manual_seed(0))

    def run(learner, ts):
        return [int(learner.act(xs[t])) + 0 * learner.reward(float(t % 3), terminated=t % 13 == 12) for t in ts]

    net_a, opt_a, a = make()
    actions_a = run(a, range(40))
    net_b, opt_b, b = make()
    actions_b = run(b, range(20))
    state, weights, opt_state = b.state_dict(), net_b.state_dict(), opt_b.state_dict()
    net_c, opt_c, c = make()
    net_c.load_state_dict(weights)
    opt_c.load_state_dict(opt_state)
    c.load_state_dict(state)
    actions_b += run(c, range(20, 40))
    assert actions_a == actions_b
    assert all(torch.equal(x, y) for x, y in zip(net_a.state_dict().values(), net_c.state_dict().values()))
    with pytest.raises(ValueError, match="missing: baseline"):
        c.load_state_dict({k: v for k, v in state.items() if k != "baseline"})


def test_heads_match_torch_distributions():
    out = torch.tensor([[0.3, -1.2, 2.0]])
    action = torch.tensor([1])
    cat = torch.distributions.Categorical(logits=out / 2.0)
    head = CategoricalHead(temperature=2.0)
    torch.testing.assert_close(head.log_prob(out, action), cat.log_prob(action))
    torch.testing.assert_close(head.entropy(out), cat.entropy())
    gauss = GaussianHead(std=0.7)
    a = torch.tensor([[0.1, 0.0, 1.5]])
    normal = torch.distributions.Normal(out, 0.7)
    torch.testing.assert_close(gauss.log_prob(out, a), normal.log_prob(a).sum(-1))
    torch.testing.assert_close(gauss.entropy(out), normal.entropy().sum(-1))
    draws = torch.stack([head.sample(out, torch.Generator().manual_seed(s)) for s in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(freq, cat.probs[0], atol=0.03, rtol=0)


def test_bad_arguments_are_named():
    net = tt.Sequential(torch.nn.Linear(2, 2), tt.snn.LI(2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="gamma must be a float in"):
        ReflectLearner(net, opt, gamma=1.0)
    with pytest.raises(ValueError, match="unknown policy head 'softmax'"):
        ReflectLearner(net, opt, head="softmax")
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="or pass trace=False"):
        ReflectLearner(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1))
    ReflectLearner(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1), trace=False).act(torch.rand(1, 2))
    learner = ReflectLearner(net, opt)
    with pytest.raises(RuntimeError, match="call act"):
        learner.reward(1.0)
    with pytest.raises(ValueError, match="batch 1"):
        learner.act(torch.rand(2, 2))
