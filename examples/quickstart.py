"""A first traceTorch model: a rate-coded two-layer SNN learning scikit-learn's 8x8 digits.

Run: ``python examples/quickstart.py`` (CPU, a few seconds).
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

import tracetorch as tt
from tracetorch.data.encoders import rate

torch.manual_seed(0)
digits = load_digits()
images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
labels = torch.tensor(digits.target)

model = tt.Sequential(
    nn.Linear(64, 128),
    tt.snn.LIB(128, beta=0.9),
    nn.Linear(128, 10),
    tt.snn.LI(10, beta=0.9),
)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
num_steps = 10

for epoch in range(3):
    for start in range(0, 1500, 100):
        x, y = images[start : start + 100], labels[start : start + 100]
        spikes = rate(x, num_steps=num_steps)  # rate coding: [T, B, 64] of 0/1
        model.zero_states()
        logits = model.run(spikes).mean(0)  # whole sequence in one call, averaged over time
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x, y = images[1500:], labels[1500:]
        model.zero_states()
        accuracy = (model.run(rate(x, num_steps=num_steps)).mean(0).argmax(1) == y).float().mean()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out accuracy {accuracy.item():.1%}")
