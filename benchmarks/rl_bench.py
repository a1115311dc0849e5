"""REFLECT vs REINFORCE with BPTT: CartPole-v1, the delayed-cue memory task, memory per episode length.

Three parts, each printing a table (every number measured in this run):

* ``cartpole``: for each seed, up to ``--episodes`` training episodes of CartPole-v1 with
  (a) REFLECT on a spiking network (population-coded observations, LIB hidden layer, LI
  readout; online, states detached every step), (b) REINFORCE with BPTT over whole
  episodes on the same spiking network, (c) REINFORCE on a plain tanh MLP (reference).
  Reports the episodes needed to reach a mean return of 195 over 100 consecutive
  episodes, the best 100-episode mean, whether 475 was reached, and time per env step.
  A run stops early once its 100-episode mean reaches 475.
* ``memory``: the delayed-cue task (``tracetorch/DelayedCue-v0``, ``--delay`` blank steps
  between cue and go, Gaussian observation noise ``--noise``) trained with REFLECT, a recurrent RLIB hidden layer against a
  feed-forward LIB layer of the same size and decays; success rate of the last 100
  training episodes and of 200 greedy evaluation episodes.
* ``peak``: one training episode of the delayed-cue task stretched to 500 and 5,000
  steps: peak bytes saved for backward (``online_bench.SavedBytes``) plus the learner's
  persistent tensors (eligibilities, pending update), REFLECT vs BPTT-REINFORCE.

Run: ``python benchmarks/rl_bench.py [--part cartpole|memory|peak|all] [--seeds 5] [--episodes 1000]``
(needs ``pip install -e ".[rl]"``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from online_bench import SavedBytes
from torch import nn

import tracetorch as tt
from tracetorch.online import CategoricalHead
from tracetorch.rl import ReflectDriver, evaluate_greedy
from tracetorch.rl.config import RLConfig
from tracetorch.rl.driver import build_env

CARTPOLE = {"id": "CartPole-v1", "population": 8, "bounds": [[-2.4, 2.4], [-3, 3], [-0.21, 0.21], [-3.5, 3.5]]}
SOLVED, PERFECT, WINDOW = 195.0, 475.0, 100


def cartpole_snn(hidden: int) -> tt.Sequential:
    rs = tt.functional.round_ste()
    layer = tt.snn.LIB(hidden, beta=0.5, quant_fn=rs)
    return tt.Sequential(nn.Linear(32, hidden), layer, nn.Linear(hidden, 2), tt.snn.LI(2, beta=0.5))


def memory_snn(kind: str, hidden: int = 32) -> tt.Sequential:
    fixed = {"learn_beta": False, "learn_threshold": False, "learn_bias": False, "quant_fn": tt.functional.round_ste()}
    if kind == "RLIB":
        layer = tt.snn.RLIB(hidden, beta=0.8, gamma=0.9, rec_weight=5.0, learn_gamma=False, learn_rec_weight=False, **fixed)
    else:
        layer = tt.snn.LIB(hidden, beta=0.8, **fixed)
    return tt.Sequential(nn.Linear(3, hidden), layer, nn.Linear(hidden, 2), tt.snn.LI(2, beta=0.5))


# REINFORCE over whole episodes (BPTT), the baseline ---------------------------------------------------------------


class EpisodeReinforce:
    """REINFORCE: run a whole episode keeping the graph, then one backward of -sum_t A_t log pi_t (A: normalized returns)."""

    def __init__(self, model: nn.Module, config: dict, lr: float, gamma: float, seed: int) -> None:
        self.model, self.config = model, RLConfig.from_any(config)
        self.env, self.encoder, _ = build_env(self.config)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.head, self.gamma, self.seed = CategoricalHead(self.config.reflect.temperature), gamma, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.episode = 0

    def run_episode(self) -> dict:
        obs, _ = self.env.reset(seed=self.seed if self.episode == 0 else None)
        for layer in getattr(self.model, "layers", dict)().values():
            layer.zero_states()
        logps, rewards, done, info = [], [], False, {}
        while not done:
            x = self.encoder(obs, self.generator)
            out = torch.stack([self.model(x_t) for x_t in x.unbind(0)]).mean(0)
            action = self.head.sample(out, self.generator)
            logps.append(self.head.log_prob(out, action)[0])
            obs, r, terminated, truncated, info = self.env.step(int(action))
            rewards.append(float(r))
            done = terminated or truncated
        returns, running = [], 0.0
        for r in reversed(rewards):
            running = r + self.gamma * running
            returns.append(running)
        g = torch.tensor(returns[::-1])
        advantage = (g - g.mean()) / (g.std() + 1e-8) if len(g) > 1 else g - g.mean()
        loss = -(advantage * torch.stack(logps)).sum()
        self.opt.zero_grad()
        if loss.requires_grad:
            loss.backward()
            self.opt.step()
        self.episode += 1
        record = {"return": sum(rewards), "length": len(rewards)}
        if "correct" in info:
            record["correct"] = bool(info["correct"])
        return record


# CartPole --------------------------------------------------------------------------------------------------------


def make_runner(method: str, seed: int, args: argparse.Namespace) -> Callable[[], dict]:
    torch.manual_seed(seed)
    config = {"seed": seed, "env": CARTPOLE, "reflect": {"gamma": args.gamma, "update_every": None}}
    if method == "reflect":
        net = cartpole_snn(args.hidden)
        return ReflectDriver(net, torch.optim.Adam(net.parameters(), lr=args.lr), config).run_episode
    if method == "bptt":
        return EpisodeReinforce(cartpole_snn(args.hidden), config, args.lr, 0.99, seed).run_episode
    mlp = nn.Sequential(nn.Linear(32, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 2))
    return EpisodeReinforce(mlp, config, args.lr, 0.99, seed).run_episode


def cartpole(args: argparse.Namespace) -> None:
    print(f"CartPole-v1: up to {args.episodes} episodes per seed, hidden {args.hidden}, Adam lr {args.lr}")
    print("| method | seed | episodes to mean>=195 | best 100-ep mean | reached 475 | episodes run | ms per env step |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        summary = []
        for seed in range(args.seeds):
            run = make_runner(method, seed, args)
            returns: list[float] = []
            solved_at, best, steps = None, 0.0, 0
            start = time.perf_counter()
            for episode in range(args.episodes):
                record = run()
                returns.append(record["return"])
                steps += record["length"]
                mean = sum(returns[-WINDOW:]) / min(len(returns), WINDOW)
                if len(returns) >= WINDOW:
                    best = max(best, mean)
                    if solved_at is None and mean >= SOLVED:
                        solved_at = episode + 1
                    if mean >= PERFECT:
                        break
            ms = (time.perf_counter() - start) / steps * 1e3
            summary.append((solved_at, best))
            print(f"| {method} | {seed} | {solved_at or '-'} | {best:.1f} | {'yes' if best >= PERFECT else 'no'} | "
                  f"{len(returns)} | {ms:.3f} |", flush=True)
        solved = [s for s, _ in summary if s is not None]
        print(f"| {method} | all | {len(solved)}/{len(summary)} seeds solved | "
              f"{sum(b >= PERFECT for _, b in summary)}/{len(summary)} reached 475 | | | |", flush=True)


# memory task ------------------------------------------------------------------------------------------------------


def memory(args: argparse.Namespace) -> None:
    print(f"\nDelayed cue, delay {args.delay}, noise {args.noise}: {args.memory_episodes} REFLECT episodes per seed, hidden 32")
    print("| hidden layer | seed | success, last 100 training episodes | greedy success (200 episodes) | ms per env step |")
    print("|---|---|---|---|---|")
    for kind in ("RLIB", "LIB"):
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = memory_snn(kind)
            task = {"delay": args.delay, "wrong_reward": -1.0, "noise": args.noise}
            config = {"seed": seed, "env": {"id": "tracetorch/DelayedCue-v0", "kwargs": task, "scale": 5.0},
                      "reflect": {"gamma": 0.5, "update_every": None, "temperature": 3.0}, "eval_episodes": 200}
            driver = ReflectDriver(net, torch.optim.Adam(net.parameters(), lr=0.005), config)
            start = time.perf_counter()
            records = driver.train(args.memory_episodes)
            ms = (time.perf_counter() - start) / driver.env_steps * 1e3
            train = sum(r["correct"] for r in records[-WINDOW:]) / len(records[-WINDOW:])
            greedy = evaluate_greedy(net, config)["success_rate"]
            print(f"| {kind} | {seed} | {train:.1%} | {greedy:.1%} | {ms:.3f} |", flush=True)


# memory per episode length ----------------------------------------------------------------------------------------


def state_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def peak(args: argparse.Namespace) -> None:
    lengths = [int(v) for v in args.lengths.split(",")]
    print("\nPeak memory of one delayed-cue training episode (bytes saved for backward + learner state), RLIB hidden 32")
    print("| method | " + " | ".join(f"length {n:,}" for n in lengths) + " | ratio | ms per env step |")
    print("|---|" + "---|" * (len(lengths) + 2))
    for method in ("reflect", "bptt"):
        cells, times = [], []
        for length in lengths:
            torch.manual_seed(0)
            net = memory_snn("RLIB")
            config = {"seed": 0, "env": {"id": "tracetorch/DelayedCue-v0", "kwargs": {"delay": length - 2}, "scale": 5.0},
                      "reflect": {"update_every": None}}
            if method == "reflect":
                driver = ReflectDriver(net, torch.optim.Adam(net.parameters(), lr=0.005), config)
                persistent = list(driver.learner.eligibility.values()) + [p for p in net.parameters()]
                run = driver.run_episode
            else:
                runner = EpisodeReinforce(net, config, 0.005, 0.99, 0)
                persistent = [p for p in net.parameters()]
                run = runner.run_episode
            with SavedBytes() as saved:
                start = time.perf_counter()
                record = run()
                times.append((time.perf_counter() - start) / record["length"] * 1e3)
            assert record["length"] == length, record
            cells.append(saved.peak + state_bytes(persistent))
        ratio = cells[-1] / cells[0]
        print(f"| {method} | " + " | ".join(f"{c / 1e6:.3f} MB" for c in cells) + f" | {ratio:.2f}x | "
              + "/".join(f"{t:.3f}" for t in times) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="all", choices=["cartpole", "memory", "peak", "all"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=1000, help="CartPole training episodes per seed (at most)")
    parser.add_argument("--methods", default="reflect,bptt,mlp", help="CartPole methods: reflect, bptt, mlp")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--gamma", type=float, default=0.95, help="REFLECT eligibility decay on CartPole")
    parser.add_argument("--delay", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.05, help="observation noise of the delayed-cue task")
    parser.add_argument("--memory-episodes", type=int, default=500)
    parser.add_argument("--lengths", default="500,5000")
    args = parser.parse_args()
    if args.part in ("cartpole", "all"):
        cartpole(args)
    if args.part in ("memory", "all"):
        memory(args)
    if args.part in ("peak", "all"):
        peak(args)


if __name__ == "__main__":
    main()
