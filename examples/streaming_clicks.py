"""Online learning on an endless Poisson clicks stream, with no BPTT and no reset.

Two input channels click at random; in each trial one side clicks more often, and the
network must name that side during the trial's last steps. Trials follow each other with
no reset, so the network must also forget the previous trial. Training is online: one
step at a time, the weight gradients carried by presynaptic traces (OTTT), the optimizer
stepping every ``--update-every`` steps; memory and time per step stay constant however
long the stream runs (the stream itself is generated a few trials at a time).

Run: ``python examples/streaming_clicks.py`` (CPU, about a minute; ``--trials 30`` for a quick look).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import tracetorch as tt
from tracetorch.online import OnlineLearner, clicks_stream, enable_trace_learning


def build(hidden: int) -> tt.Sequential:
    """Clicks (left, right) -> spiking hidden layer -> leaky-integrator readout (2 logits)."""
    return tt.Sequential(nn.Linear(2, hidden), tt.snn.LIB(hidden, beta=0.9), nn.Linear(hidden, 2), tt.snn.LI(2, beta=0.9))


def main(argv: list[str] | None = None) -> float:
    """Train on the stream and print accuracy per block of trials; returns the last block's accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400, help="trials in the whole stream")
    parser.add_argument("--block", type=int, default=20, help="trials per generated chunk / report line")
    parser.add_argument("--batch", type=int, default=32, help="independent streams trained side by side")
    parser.add_argument("--trial-steps", type=int, default=40)
    parser.add_argument("--decision-steps", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--update-every", type=int, default=1, help="optimizer step every k timesteps")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.trials < 1 or args.block < 1:
        parser.error("--trials and --block must be positive")

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = build(args.hidden)
    enable_trace_learning(model)
    learner = OnlineLearner(model, torch.optim.Adam(model.parameters(), lr=args.lr), nn.functional.cross_entropy,
                            update_every=args.update_every)
    accuracy = 0.0
    done = 0
    print(f"{'steps':>8} {'trials':>7} {'loss':>7} {'accuracy':>9}")
    while done < args.trials:
        trials = min(args.block, args.trials - done)
        stream = clicks_stream(trials, args.batch, args.trial_steps, args.decision_steps, generator=generator)
        losses, correct = [], []
        for t, x_t in enumerate(stream.clicks):
            target = stream.labels[t] if stream.decide[t] else None
            result = learner.step(x_t, target)
            if result.loss is not None:
                losses.append(result.loss)
            if t % args.trial_steps == args.trial_steps - 1:  # the decision: the readout at the trial's last step
                correct.append((result.output.argmax(-1) == stream.labels[t]).float().mean().item())
        done += trials
        accuracy = sum(correct) / len(correct)
        print(f"{learner.steps:>8} {done:>7} {sum(losses) / len(losses):>7.3f} {accuracy:>9.1%}")
    return accuracy


if __name__ == "__main__":
    main()
