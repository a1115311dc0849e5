"""
A first layer: membrane and spikes
==================================

One ``LIB`` layer (leaky integrate, binary events, subtractive reset) driven by a constant
current, one step per call. Its membrane follows :math:`m \\leftarrow \\beta m + x`, fires
when it crosses the threshold and drops by the threshold when it does (the
:doc:`equations </concepts/layers>`).
"""

import matplotlib.pyplot as plt
import torch

import tracetorch as tt

layer = tt.snn.LIB(3, beta=0.9, threshold=1.0, quant_fn=tt.functional.round_ste())  # 3 neurons, 0/1 spikes
current = torch.tensor([[0.05, 0.15, 0.3]])  # one batch row, a different drive per neuron
membranes, spikes = [], []
with torch.no_grad():
    for _ in range(60):
        spikes.append(layer(current))
        membranes.append(layer.mem.clone())  # the membrane after the reset
membranes = torch.cat(membranes)
spikes = torch.cat(spikes)
print(layer)
print("spike counts per neuron:", spikes.sum(0).tolist())

# %%
# The weakest drive never fires: :math:`m` converges to :math:`x / (1 - \beta) = 0.5`, under
# the threshold. The others fire regularly, the stronger one more often.

fig, axes = plt.subplots(3, 1, figsize=(8, 5), sharex=True)
for i, ax in enumerate(axes):
    ax.plot(membranes[:, i], label="membrane")
    ax.vlines(torch.nonzero(spikes[:, i]).flatten(), 0, 1.2, colors="C3", label="spike")
    ax.axhline(1.0, ls="--", c="gray", lw=0.8)
    ax.set_ylabel(f"x = {current[0, i]:.2f}")
axes[0].legend(loc="upper right", fontsize=8)
axes[-1].set_xlabel("step")
fig.tight_layout()

# %%
# The same by hand, to check the equations (``spike_fn`` is ``sigmoid(4 z)``, ``round_ste``
# rounds it):

mem = torch.zeros(1, 3)
for step in range(60):
    mem = 0.9 * mem + current
    s = torch.round(torch.sigmoid(4 * (mem - 1.0)))
    mem = mem - s * 1.0
    assert torch.equal(s[0], spikes[step])
print("hand-written equations agree with the layer at every step")

# %%
# A whole sequence in one call: ``layer.run`` takes ``[T, B, N]`` and gives what the steps give.

layer.zero_states()
sequence = layer.run(current.expand(60, 1, 3))
assert torch.equal(sequence[:, 0], spikes)
print("run() output equals the 60 single steps:", torch.equal(sequence[:, 0], spikes))

# %%
# Parameters are constrained and learnable: ``layer.beta`` is the value, ``layer.raw_beta``
# the stored logit that the optimizer changes.

print("beta", layer.beta.tolist(), "raw_beta", [round(v, 4) for v in layer.raw_beta.tolist()])
