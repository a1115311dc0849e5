"""OnlineLearner (per-step loop), the clicks stream, and the streaming example."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch.online import OnlineLearner, clicks_stream, enable_trace_learning

EXAMPLE = Path(__file__).parents[1] / "examples" / "streaming_clicks.py"


def _net() -> tt.Sequential:
    torch.manual_seed(0)
    net = tt.Sequential(nn.Linear(2, 4), tt.snn.LIB(4), nn.Linear(4, 2), tt.snn.LI(2))
    enable_trace_learning(net)
    return net


def test_update_every_k_steps_sums_the_gradients_of_those_steps():
    net = _net()
    xs, ys = torch.rand(6, 3, 2), torch.randint(0, 2, (6, 3))
    # reference: the summed per-step trace gradients, one SGD step of lr 1
    net.zero_states()
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    for x, y in zip(xs, ys):
        nn.functional.cross_entropy(net(x), y).backward()
        net.detach_states()
    expected = {n: start[n] - p.grad for n, p in net.named_parameters()}
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(start[n])
            p.grad = None
    net.zero_states()
    learner = OnlineLearner(net, torch.optim.SGD(net.parameters(), lr=1.0), nn.functional.cross_entropy, update_every=6)
    outputs, losses = learner.run(xs, ys)
    assert outputs.shape == (6, 3, 2) and not outputs.requires_grad and all(loss > 0 for loss in losses)
    assert learner.updates == 1 and learner.steps == 6
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], msg=n)
    assert all(layer_state is None or not layer_state.requires_grad for _, layer_state in net[1].states())


def test_steps_without_target_learn_nothing_and_flush_applies_pending_gradients():
    net = _net()
    learner = OnlineLearner(net, torch.optim.SGD(net.parameters(), lr=0.1), nn.functional.cross_entropy, update_every=3)
    before = net[0].weight.detach().clone()
    for _ in range(4):
        assert learner.step(torch.rand(2, 2)).loss is None
    assert learner.updates == 0 and torch.equal(net[0].weight, before)
    learner.step(torch.rand(2, 2), torch.tensor([0, 1]))  # step 5: gradient pending, no update yet
    assert learner.updates == 0
    assert learner.flush() is True and learner.updates == 1 and not torch.equal(net[0].weight, before)
    assert learner.flush() is False


def test_learner_errors():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="update_every must be a positive int, got 0"):
        OnlineLearner(net, opt, nn.functional.cross_entropy, update_every=0)
    with pytest.raises(ValueError, match="clip_grad_norm must be > 0 or None, got -1"):
        OnlineLearner(net, opt, nn.functional.cross_entropy, clip_grad_norm=-1)
    learner = OnlineLearner(net, opt, lambda out, y: (out - y) ** 2)
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor"):
        learner.step(torch.rand(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="3 targets for 2 timesteps"):
        learner.run(torch.rand(2, 1, 2), [None, None, None])


def test_clicks_stream_statistics_and_layout():
    s = clicks_stream(200, 16, trial_steps=50, decision_steps=10, rates=[(0.4, 0.1)], generator=torch.Generator().manual_seed(0))
    assert s.clicks.shape == (10000, 16, 2) and s.labels.shape == (10000, 16) and s.decide.shape == (10000,)
    assert s.decide[:40].sum() == 0 and s.decide[40:50].all()
    trials = s.labels.view(200, 50, 16)
    assert (trials == trials[:, :1]).all()  # one label per trial
    rate = s.clicks.view(200, 50, 16, 2).mean(1)  # [trial, batch, side]
    winner = rate.gather(-1, trials[:, 0, :, None]).squeeze(-1)
    loser = rate.gather(-1, 1 - trials[:, 0, :, None]).squeeze(-1)
    assert winner.mean().item() == pytest.approx(0.4, abs=0.01) and loser.mean().item() == pytest.approx(0.1, abs=0.01)
    assert 0.45 < s.labels.float().mean().item() < 0.55


def test_clicks_stream_errors():
    with pytest.raises(ValueError, match="trial_steps must be a positive int, got 0"):
        clicks_stream(1, 1, trial_steps=0)
    with pytest.raises(ValueError, match=r"decision_steps must be an int in \[1, trial_steps=5\], got 6"):
        clicks_stream(1, 1, trial_steps=5, decision_steps=6)
    with pytest.raises(ValueError, match="rates must be \\(high, low\\) pairs"):
        clicks_stream(1, 1, rates=[(0.1, 0.4)])


def test_streaming_example_runs_and_learns(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["streaming_clicks.py"])
    main = runpy.run_path(str(EXAMPLE))["main"]
    accuracy = main(["--trials", "16", "--block", "8", "--batch", "16", "--hidden", "32", "--lr", "5e-3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["steps", "trials", "loss", "accuracy"] and len(lines) == 3
    assert lines[-1].split()[:2] == ["640", "16"]
    assert accuracy > 0.7  # chance is 0.5
