"""
Online learning with traces vs BPTT
===================================

BPTT keeps every step's activations until the backward pass: its memory grows with the
sequence length. :mod:`tracetorch.online` learns one step at a time instead (Online
Training Through Time, Xiao et al., 2022): each Linear feeding a spiking layer keeps a
decaying trace of its inputs, :math:`a_t = \\lambda a_{t-1} + x_t`, and its weight gradient
at step :math:`t` is :math:`g_t \\otimes a_t`. States are detached after every step, so
memory stays constant however long the sequence is.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import tracetorch as tt
from tracetorch.online import OnlineLearner, clicks_stream, enable_trace_learning


def build() -> tt.Sequential:
    torch.manual_seed(0)
    return tt.Sequential(
        nn.Linear(2, 64), tt.snn.LIB(64, beta=0.9),   # clicks (left, right) -> spiking hidden layer
        nn.Linear(64, 2), tt.snn.LI(2, beta=0.9),     # -> two leaky-integrator logits
    )


class SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """Counts the bytes autograd saves for the backward pass while the block runs."""

    def __init__(self) -> None:
        self.bytes = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            self.bytes += t.numel() * t.element_size()
            return t

        super().__init__(pack, lambda t: t)


# %%
# Memory held for the backward pass
# ---------------------------------
# BPTT over a sequence of T steps against one online step (which is all an online learner
# ever holds), for a batch of 32 streams:

lengths = [10, 20, 40]
bptt, online = [], []
for T in lengths:
    x_seq = torch.rand(T, 32, 2)
    model = build()
    saved = SavedBytes()
    with saved:
        model.zero_states()
        loss = model.run(x_seq).mean()
    loss.backward()
    bptt.append(saved.bytes / 2**20)

    model = build()
    enable_trace_learning(model)
    learner = OnlineLearner(model, torch.optim.SGD(model.parameters(), lr=0.0), lambda out, y: out.mean())
    peak = 0
    for x_t in x_seq:
        saved = SavedBytes()
        with saved:
            learner.step(x_t, torch.zeros(32))
        peak = max(peak, saved.bytes)
    online.append(peak / 2**20)
    print(f"T={T:4d}: BPTT saves {bptt[-1]:7.3f} MiB, an online step {online[-1]:.3f} MiB")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(lengths, bptt, marker="o", label="BPTT (whole sequence)")
ax.plot(lengths, online, marker="o", label="online traces (per step)")
ax.set(xlabel="sequence length T", ylabel="saved for backward (MiB)", title="memory for the backward pass")
ax.legend()
fig.tight_layout()
assert bptt[-1] > 10 * online[-1] and abs(online[-1] - online[0]) < 1e-9

# %%
# Learning an endless stream
# --------------------------
# Poisson clicks trials back to back with no reset (:func:`tracetorch.online.clicks_stream`);
# the network must name the side that clicked more during each trial's last steps. The
# optimizer steps every timestep; nothing is ever unrolled.

model = build()
enable_trace_learning(model)
learner = OnlineLearner(model, torch.optim.Adam(model.parameters(), lr=2e-3), nn.functional.cross_entropy)
generator = torch.Generator().manual_seed(0)
blocks = []
for _ in range(3):
    stream = clicks_stream(3, 32, 30, 8, generator=generator)   # 3 trials of 30 steps, 32 streams
    correct = []
    for t, x_t in enumerate(stream.clicks):
        result = learner.step(x_t, stream.labels[t] if stream.decide[t] else None)
        if t % 30 == 29:
            correct.append((result.output.argmax(-1) == stream.labels[t]).float().mean().item())
    blocks.append(sum(correct) / len(correct))
    print(f"{learner.steps:5d} steps: decision accuracy over the last 3 trials {blocks[-1]:.1%}")

# %%
# For a ``Linear -> LI`` pair this gradient is exactly BPTT's; with a threshold and reset it
# is the OTTT approximation. In ``tt-train``: ``trainer=trace`` (``trainer.update_every=k``).
# ``benchmarks/online_bench.py`` compares accuracy and memory with BPTT and truncated BPTT.
