"""
Training a classifier in Python
===============================

A rate-coded spiking MLP learns scikit-learn's 8x8 digits in plain PyTorch: an encoder
turns each image into a ``[T, B, 64]`` spike sequence, ``model.run`` runs the whole
sequence in one call, the readout is the time-averaged membrane of a leaky integrator,
and the loss backpropagates through time (BPTT).
"""

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import tracetorch as tt
from tracetorch.data.encoders import rate

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0       # intensities in [0, 1]
y = torch.tensor(digits.target)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)

model = tt.Sequential(
    nn.Linear(64, 128),
    tt.snn.LIB(128, beta=0.9, quant_fn=tt.functional.round_ste()),   # binary spikes
    nn.Linear(128, 10),
    tt.snn.LI(10, beta=0.9),                                          # leaky readout
)
print(model)

# %%
# One epoch: new sequence (``zero_states``), encode, run, average over time, step.

optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
num_steps, batch_size = 8, 64
generator = torch.Generator().manual_seed(0)


def accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        model.zero_states()
        logits = model.run(rate(images, num_steps, generator)).mean(0)
    return (logits.argmax(1) == labels).float().mean().item()


history = []
for epoch in range(2):
    order = torch.randperm(len(x_train))
    losses = []
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        model.zero_states()
        logits = model.run(rate(x_train[index], num_steps, generator)).mean(0)  # [T, B, 10] -> [B, 10]
        loss = nn.functional.cross_entropy(logits, y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    history.append((sum(losses) / len(losses), accuracy(x_test, y_test)))
    print(f"epoch {epoch + 1}: train loss {history[-1][0]:.3f}, test accuracy {history[-1][1]:.1%}")

# %%
# Learning curves:

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3))
ax_loss.plot(range(1, len(history) + 1), [h[0] for h in history], marker="o")
ax_loss.set(xlabel="epoch", ylabel="train loss")
ax_acc.plot(range(1, len(history) + 1), [h[1] for h in history], marker="o", c="C1")
ax_acc.set(xlabel="epoch", ylabel="test accuracy")
fig.tight_layout()
assert history[-1][1] > 0.8

# %%
# The hidden layer's spikes for one test digit (what ``raster.png`` of ``tt-train`` shows):

with torch.no_grad():
    model.zero_states()
    sequence = rate(x_test[:1], num_steps, generator)
    hidden = model[1].run(model[0](sequence))              # the LIB layer's output, [T, 1, 128]
fig, ax = plt.subplots(figsize=(8, 2.5))
ax.imshow(hidden[:, 0].T, aspect="auto", cmap="gray_r", interpolation="nearest")
ax.set(xlabel="step", ylabel="hidden neuron", title=f"digit {y_test[0].item()}: {int(hidden.sum())} spikes")
fig.tight_layout()

# %%
# Save and restore the weights with ``torch.save(model.state_dict(), ...)``; hidden states
# separately with ``model.save_states_file("states.safetensors")``. ``tt-train`` does this
# loop, checkpoints and plots for you: :doc:`plot_tt_train`.
