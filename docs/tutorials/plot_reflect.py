"""
Reinforcement learning with REFLECT: CartPole
=============================================

:class:`tracetorch.online.ReflectLearner` trains a spiking policy online from rewards.
Each step the gradient of the sampled action's log-probability is formed from the
presynaptic traces of trace learning and folded into an eligibility trace per parameter,
:math:`e_t = \\gamma e_{t-1} + \\nabla_w \\log \\pi(a_t \\mid s_t)`; the reward minus a
running baseline, :math:`\\delta_t = r_t - b_t`, turns it into the update
:math:`\\Delta w \\propto \\delta_t e_t`. No replay buffer, no BPTT over the episode:
memory and time per step do not depend on the episode length.

:class:`tracetorch.rl.ReflectDriver` wraps the learner with a Gymnasium environment and an
observation encoder (needs the ``[rl]`` extra: ``pip install "tracetorch[rl]"``).
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import tracetorch as tt
from tracetorch.rl import ReflectDriver, RLConfig, evaluate_greedy

# %%
# The configuration
# -----------------
# The same settings as ``configs/experiment/cartpole_reflect.yaml``: each of CartPole's 4
# observations is population-coded by 8 neurons (32 inputs), a binary LIB hidden layer and
# an LI readout whose membrane gives the two action logits. ``update_every: null`` applies
# one update per episode (the eligibility still accumulates every step).

config = RLConfig.from_any({
    "seed": 0,
    "env": {"id": "CartPole-v1", "population": 8,
            "bounds": [[-2.4, 2.4], [-3.0, 3.0], [-0.21, 0.21], [-3.5, 3.5]]},
    "encoder": {"name": "direct", "num_steps": 1},
    "reflect": {"gamma": 0.95, "baseline_decay": 0.99, "update_every": None},
})
print(config.env)

torch.manual_seed(0)
policy = tt.Sequential(
    nn.Linear(32, 64), tt.snn.LIB(64, beta=0.5, quant_fn=tt.functional.round_ste()),   # 0/1 spikes
    nn.Linear(64, 2), tt.snn.LI(2, beta=0.5),                                          # action logits
)
before = evaluate_greedy(policy, config, episodes=5)["mean_return"]

# %%
# Training episodes
# -----------------
# :meth:`~tracetorch.rl.ReflectDriver.train` runs episodes and returns one record per
# episode (return, length, the 100-episode moving mean, the baseline, counters).

driver = ReflectDriver(policy, torch.optim.Adam(policy.parameters(), lr=1e-2), config)
records = driver.train(80)
for r in records[9::10]:
    print(f"episode {r['episode']:3d}: return {r['return']:5.0f}, mean so far {r['mean_return_100']:6.1f}")

after = evaluate_greedy(policy, config, episodes=5)["mean_return"]
print(f"greedy return over 5 episodes: {before:.1f} before training, {after:.1f} after 80 episodes")

returns = [r["return"] for r in records]
window = 10
smooth = [sum(returns[max(0, i - window + 1):i + 1]) / len(returns[max(0, i - window + 1):i + 1])
          for i in range(len(returns))]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(range(1, len(returns) + 1), returns, alpha=0.4, label="return")
ax.plot(range(1, len(returns) + 1), smooth, label=f"mean of the last {window}")
ax.set(xlabel="episode", ylabel="return (steps balanced)", title="REFLECT on CartPole-v1")
ax.legend()
fig.tight_layout()
assert sum(returns[-20:]) > sum(returns[:20])  # learning, already within 80 episodes

# %%
# Constant memory
# ---------------
# What the learner keeps between steps is one eligibility tensor per parameter, the
# presynaptic traces, the hidden states and a scalar baseline: the same size after a
# 10-step episode as after a 500-step one. (BPTT-REINFORCE keeps every step's activations
# until the episode ends; ``benchmarks/rl_bench.py --part memory`` measures both.)

held = driver.learner.state_dict()
print(f"learner state: {len(held)} tensors, {sum(t.numel() for t in held.values()):,} numbers, "
      f"after {driver.env_steps:,} environment steps")

# %%
# The same from the command line
# ------------------------------
# ``tt-train`` runs REFLECT when ``trainer.learning=reflect``; the experiment file holds the
# model, the optimizer and the ``rl`` section (an :class:`~tracetorch.rl.RLConfig`).
# Checkpoints hold the driver's whole state (eligibilities, baseline, environment and
# encoder RNGs), so ``trainer.resume=auto`` continues the run exactly:
#
# .. code-block:: bash
#
#    tt-train experiment=cartpole_reflect                      # 1000 episodes, then 20 greedy ones
#    tt-train experiment=cartpole_reflect rl.episodes=200 rl.reflect.update_every=10
#    tt-train experiment=delayed_cue_reflect                   # a memory task: recurrent RLIB
#
# Longer runs reach CartPole's maximum return of 500: ``benchmarks/rl_bench.py`` compares
# REFLECT with BPTT-REINFORCE over 5 seeds (the README's table).
