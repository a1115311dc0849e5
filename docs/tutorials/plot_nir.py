"""
Export to NIR and back
======================

`NIR <https://neuroir.org>`_ (the Neuromorphic Intermediate Representation) moves spiking
networks between simulators (snnTorch, Norse, SpikingJelly, Sinabs, Lava, ...) and
neuromorphic hardware. :func:`tracetorch.nir.to_nir` writes a traceTorch model as a
``nir.NIRGraph``, :func:`tracetorch.nir.from_nir` reads any NIR graph back as a
:class:`tracetorch.Model`. NIR nodes are continuous-time ODEs,
:math:`\\tau \\dot v = (v_{leak} - v) + r I`; forward Euler with step ``dt`` gives
traceTorch's update :math:`v \\leftarrow \\beta v + (1-\\beta)(v_{leak} + r I)` with
:math:`\\beta = 1 - dt/\\tau`. Needs the ``[nir]`` extra: ``pip install "tracetorch[nir]"``.
"""

import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

import tracetorch as tt
from tracetorch.nir import NIRExportError, NIRResetWarning, check_exportable, from_nir, read, to_nir, write

# %%
# A model NIR can hold
# --------------------
# NIR neurons emit deterministic 0/1 spikes, so a firing layer exports exactly when its
# output is binary: ``LIB`` with ``quant_fn=round_ste()`` becomes a ``LIF`` node, ``SLIB``
# a ``CubaLIF``, an ``LI`` readout an ``LI`` node. A few steps of training first, so the
# weights are not the initial ones.

torch.manual_seed(0)
model = tt.Sequential(
    nn.Linear(20, 32), tt.snn.SLIB(32, alpha=0.8, beta=0.9, quant_fn=tt.functional.round_ste()),
    nn.Linear(32, 4), tt.snn.LI(4, beta=0.9),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
x_train, y_train = torch.rand(25, 16, 20) * 2, torch.randint(0, 4, (16,))
for _ in range(5):
    model.zero_states()
    loss = nn.functional.cross_entropy(model.run(x_train)[-1], y_train)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

for path, layer, verdict, _reason in check_exportable(model):
    print(f"{path:3s} {layer:8s} {verdict}")

# %%
# Write, read, compare
# --------------------
# The graph carries ``dt`` in its metadata. Firing layers warn (:class:`~tracetorch.nir.NIRResetWarning`)
# that NIR's ``LIF`` resets to ``v_reset`` where traceTorch subtracts the threshold; the
# nodes' metadata says ``reset='subtract'`` so that a peer can be set to match.

folder = Path(tempfile.mkdtemp())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    graph = to_nir(model, dt=1e-4)
print(f"{len(caught)} warning: {caught[0].category.__name__}" if caught else "no warning")
assert any(issubclass(w.category, NIRResetWarning) for w in caught)

file = write(graph, folder / "model.nir")
print(f"{file.name}: {file.stat().st_size:,} bytes, nodes {sorted(read(file).nodes)}")
print(graph.nodes["1_slib"].__class__.__name__, "tau_mem:", graph.nodes["1_slib"].tau_mem[:3])

imported = from_nir(file)
x = torch.rand(50, 3, 20) * 2   # 50 steps, 3 sequences
model.zero_states()
imported.zero_states()
with torch.no_grad():
    ours = torch.stack([model(x_t) for x_t in x])
    theirs = torch.stack([imported(x_t) for x_t in x])
difference = (ours - theirs).abs().amax(dim=(1, 2))
print(f"largest difference over {len(x)} steps: {difference.max().item()}")
assert torch.equal(ours, theirs)

fig, ax = plt.subplots(figsize=(6, 3.5))
for k in range(4):
    ax.plot(ours[:, 0, k], label=f"traceTorch, output {k}")
    ax.plot(theirs[:, 0, k], linestyle="none", marker=".", color="black")
ax.set(xlabel="step", ylabel="LI readout", title="original (lines) and imported from .nir (dots)")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# What NIR cannot hold
# --------------------
# A default ``LIB`` emits graded spikes (its ``quant_fn`` is the identity): NIR has no such
# neuron, so the export is refused with one error naming every offending layer, the
# reason and the nearest exportable layer.

graded = tt.Sequential(nn.Linear(20, 8), tt.snn.LIB(8), nn.Linear(8, 4), tt.snn.LI(4))
try:
    to_nir(graded)
except NIRExportError as err:
    print(err)
else:
    raise AssertionError("a graded LIB must be refused")

# %%
# ``approximate=True`` writes the nearest NIR node instead (binary spikes), tagged in its
# metadata so that :func:`~tracetorch.nir.from_nir` rebuilds the exact layer: the round trip
# traceTorch -> ``.nir`` -> traceTorch stays exact, while other tools see binary LIF neurons.

with warnings.catch_warnings():
    warnings.simplefilter("ignore", NIRResetWarning)
    back = from_nir(to_nir(graded, approximate=True))
graded.zero_states()
assert torch.equal(back.run(x), graded.run(x))
print("graded LIB round trip through an approximate graph: identical outputs")

# %%
# From the command line
# ---------------------
#
# .. code-block:: bash
#
#    tt-export --checkpoint runs/a/checkpoints/step_00000450 -o model.nir   # a trained checkpoint
#    tt-export configs/model/mlp.yaml -o mlp.nir --approximate              # a model spec
#    tt-validate --nir configs/model/recurrent.yaml                         # per layer: exact / approximate / refused
#    tt-train model=net.nir                                                 # fine-tune a network trained elsewhere
#
# ``model=net.nir`` is short for ``model=nir model.path=net.nir``; the graph may come from
# snnTorch, Norse, SpikingJelly or any other NIR writer.
