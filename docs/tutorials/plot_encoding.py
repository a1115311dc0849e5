"""
Encoding: rate, latency and direct coding
=========================================

A spiking network takes sequences ``[T, B, ...]``; an encoder turns intensities in
``[0, 1]`` into one. :mod:`tracetorch.data.encoders` has three:

* **rate**: at every step each input fires with probability ``gain * x``;
* **latency**: one spike per input, brighter inputs earlier, at step ``round((1 - x) * (T - 1))``;
* **direct**: the analog value itself at every step.
"""

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits

from tracetorch.data.encoders import direct, latency, rate

digit = torch.tensor(load_digits().data[0], dtype=torch.float32) / 16.0  # one 8x8 image, 64 intensities
num_steps = 20
generator = torch.Generator().manual_seed(0)
codes = {
    "rate": rate(digit.unsqueeze(0), num_steps, generator)[:, 0],
    "latency": latency(digit.unsqueeze(0), num_steps)[:, 0],
    "direct": direct(digit.unsqueeze(0), num_steps)[:, 0],
}
for name, seq in codes.items():
    print(f"{name:8s} shape {tuple(seq.shape)}  values {sorted(set(seq.unique().tolist()))[:4]}...  "
          f"total {seq.sum():.1f}")

# %%
# The three codes of the same image, one row per input pixel, one column per step:

fig, axes = plt.subplots(1, 4, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 2, 2, 2]})
axes[0].imshow(digit.view(8, 8), cmap="gray_r")
axes[0].set_title(f"digit {load_digits().target[0]}")
axes[0].axis("off")
for ax, (name, seq) in zip(axes[1:], codes.items()):
    ax.imshow(seq.T, aspect="auto", cmap="gray_r", interpolation="nearest")
    ax.set_title(name)
    ax.set_xlabel("step")
axes[1].set_ylabel("input pixel")
fig.tight_layout()

# %%
# Rate coding is unbiased: averaged over time, the spikes give back the intensities
# (the error shrinks like :math:`1/\sqrt{T}`). Latency coding fires once per pixel above the
# threshold, so it carries the image in spike *times*:

long = rate(digit.expand(1, 64), 2000, torch.Generator().manual_seed(1))[:, 0]
print(f"rate, T=2000: mean absolute error of the spike average {(long.mean(0) - digit).abs().mean():.4f}")
first_spike = codes["latency"].argmax(0).float()
bright = digit > 0.5
print(f"latency: bright pixels fire at step {first_spike[bright].mean():.1f} on average, "
      f"dim ones at {first_spike[(digit > 0.01) & ~bright].mean():.1f}")
assert torch.equal(codes["latency"].sum(0), (digit >= 0.01).float())  # one spike per pixel above threshold

# %%
# In ``tt-train`` the encoder is a config group: ``encoder=latency``, ``encoder.num_steps=30``,
# ``encoder.gain=0.5`` (see the :doc:`configuration reference </reference/training-config>`).
