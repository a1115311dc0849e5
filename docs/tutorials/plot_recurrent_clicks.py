"""
Recurrent layers on the Poisson clicks task
===========================================

In each trial of the Poisson clicks task (Brunton, Botvinick & Brody, 2013) two channels,
left and right, click at random; one side clicks at a higher rate. The answer, which
side clicked more, depends on the whole sequence, so the network needs memory. Here a
recurrent binary layer (``RLIB``: the layer's own previous output, smoothed by a trace
with decay ``gamma``, is fed back with a learnable ``rec_weight``) reads the clicks, and
a leaky integrator reads out its spikes.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import tracetorch as tt
from tracetorch.data import poisson_clicks

torch.manual_seed(0)
x_train, y_train = poisson_clicks(600, num_steps=50, seed=0)   # [N, T, 2] click counts, labels 0/1
x_test, y_test = poisson_clicks(400, num_steps=50, seed=1)
x_train, x_test = x_train.transpose(0, 1), x_test.transpose(0, 1)  # time first: [T, N, 2]
print("train", tuple(x_train.shape), "test", tuple(x_test.shape), "right side wins in", f"{y_train.float().mean():.0%}")

model = tt.Sequential(
    nn.Linear(2, 32),
    tt.snn.RLIB(32, beta=0.95, gamma=0.9, rec_weight=0.1),
    nn.Linear(32, 2),
    tt.snn.LI(2, beta=0.98),
)
print(model)

# %%
# Train with BPTT over the 50 steps, reading the readout's membrane at the last step.

optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)


def evaluate() -> float:
    with torch.no_grad():
        model.zero_states()
        return (model.run(x_test)[-1].argmax(1) == y_test).float().mean().item()


print(f"before training: test accuracy {evaluate():.1%}")
for epoch in range(4):
    order = torch.randperm(x_train.shape[1])
    for start in range(0, len(order), 100):
        index = order[start : start + 100]
        model.zero_states()
        loss = nn.functional.cross_entropy(model.run(x_train[:, index])[-1], y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {evaluate():.1%}")
assert evaluate() > 0.6

# %%
# The evidence (right minus left clicks so far) and the readout's decision variable
# (right minus left membrane) through three test trials: the network integrates.

with torch.no_grad():
    model.zero_states()
    readout = model.run(x_test[:, :3])
evidence = (x_test[:, :3, 1] - x_test[:, :3, 0]).cumsum(0)
fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), sharey=False)
for i, ax in enumerate(axes):
    ax.plot(evidence[:, i], label="clicks: right - left")
    ax.plot(readout[:, i, 1] - readout[:, i, 0], label="readout: right - left")
    ax.axhline(0, c="gray", lw=0.6)
    ax.set(title=f"trial {i}: answer {'right' if y_test[i] else 'left'}", xlabel="step")
axes[0].legend(fontsize=7)
fig.tight_layout()

# %%
# The recurrent parameters were learned too (one value per neuron, ``rank`` 1):

layer = model[1]
print(f"rec_weight: mean {layer.rec_weight.mean():.3f}, range [{layer.rec_weight.min():.3f}, {layer.rec_weight.max():.3f}]")
print(f"gamma: mean {layer.gamma.mean():.3f}")

# %%
# ``tt-train experiment=clicks_recurrent`` trains the same kind of model from the configs
# (``configs/experiment/clicks_recurrent.yaml``).
