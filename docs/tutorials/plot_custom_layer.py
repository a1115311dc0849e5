"""
Custom layers
=============

Subclass :class:`tracetorch.Layer` and a new neuron gets what the built-in 32 have:
constrained, optionally learnable parameters with a rank (``register_param``), hidden
states that :class:`tracetorch.Model` finds, zeroes, detaches and saves
(``register_state``), and the neuron dimension ``dim``. Registered with
:func:`tracetorch.builder.register`, it can be used in model files too.

The example: an adaptive LIF neuron whose threshold rises after each spike and relaxes back,

.. math::

   m \\leftarrow \\beta m + x, \\quad s = H(m - \\theta - a), \\quad m \\leftarrow m - s\\,\\theta,
   \\quad a \\leftarrow \\rho a + \\kappa s.
"""

import matplotlib.pyplot as plt
import torch

import tracetorch as tt


@tt.builder.register("ALIF")
class ALIF(tt.Layer):
    """Adaptive-threshold LIF: binary spikes, the threshold rises by ``kappa`` per spike."""

    def __init__(self, num_neurons: int, beta: float = 0.9, rho: float = 0.95, kappa: float = 0.5,
                 threshold: float = 1.0, dim: int = -1) -> None:
        super().__init__(num_neurons, dim)
        self.register_param("beta", beta, rank=1, learn=True, constraint="sigmoid")      # in (0, 1)
        self.register_param("rho", rho, rank=0, learn=False, constraint="sigmoid")       # one shared, fixed
        self.register_param("kappa", kappa, rank=1, learn=True, constraint="none")       # any value
        self.register_param("threshold", threshold, rank=1, learn=True, constraint="softplus")
        self.register_state("mem")
        self.register_state("adapt")
        self.quant = tt.functional.round_ste()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check_input(x)                                   # shape and dtype checks, names this layer
        beta, rho, kappa, threshold = (self.param_view(p, x) for p in ("beta", "rho", "kappa", "threshold"))
        mem = beta * self.zeros_if_none(self.mem, x) + x
        adapt = self.zeros_if_none(self.adapt, x)
        spikes = self.quant(torch.sigmoid(4 * (mem - threshold - adapt)))
        self.mem = mem - spikes * threshold
        self.adapt = rho * adapt + kappa * spikes
        return spikes


layer = ALIF(2, kappa=torch.tensor([0.0, 0.5]))                # neuron 0 does not adapt, neuron 1 does
with torch.no_grad():
    out = torch.stack([layer(torch.full((1, 2), 0.4)) for _ in range(80)])[:, 0]
print(layer)
print("spikes without / with adaptation:", out.sum(0).tolist())
assert out[:, 1].sum() < out[:, 0].sum()

fig, ax = plt.subplots(figsize=(8, 2.2))
for i in range(2):
    ax.eventplot(torch.nonzero(out[:, i]).flatten().tolist(), lineoffsets=i, linelengths=0.7, colors=f"C{i}")
ax.set(yticks=[0, 1], yticklabels=["kappa = 0", "kappa = 0.5"], xlabel="step", title="constant drive 0.4")
fig.tight_layout()

# %%
# In a model, the layer's states are managed with the others:

model = tt.Sequential(torch.nn.Linear(3, 4), ALIF(4), torch.nn.Linear(4, 2), tt.snn.LI(2))
model(torch.rand(5, 3))
print(sorted(model.save_states()))
model.zero_states()
assert model[1].mem is None

# %%
# Registered, it is a layer name in model files; ``num_neurons`` is inferred like the
# built-in layers':

spec = """
input_shape: [3]
layers:
  - Linear: {out_features: 8}
  - ALIF: {kappa: 0.2, beta: 0.8}
  - Linear: {out_features: 2}
  - LI: {}
"""
import yaml  # noqa: E402

net = tt.build_model(yaml.safe_load(spec))
print(net)
out = net.run(torch.rand(20, 5, 3))
print("output", tuple(out.shape))
out.sum().backward()                                           # gradients reach beta, kappa and threshold
print("learnable:", sorted(n for n, p in net.named_parameters() if p.grad is not None))
tt.builder.unregister("ALIF")
