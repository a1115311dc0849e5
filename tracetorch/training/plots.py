"""PNG plots of a run: learning curves, and a spike raster with membrane traces.

Both use matplotlib's non-interactive ``Agg`` backend, so they work on headless machines.

Example:
    >>> import tempfile, os
    >>> from tracetorch.training.plots import plot_curves
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plot_curves([{"epoch": 1, "train_loss": 1.0, "test_loss": 1.1, "train_accuracy": 0.5, "test_accuracy": 0.4}], path)
    >>> os.path.getsize(path) > 0
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.core.model import iter_layers
from tracetorch.training.metrics import firing_layers

__all__ = ["plot_curves", "record_sample", "plot_raster"]


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    """Loss and accuracy per epoch, train and test, side by side."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for split in ("train", "test"):
            ax.plot(epochs, [h.get(f"{split}_{key}") for h in history], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _membrane(layer: nn.Module) -> Tensor | None:
    names = layer.state_names()
    if "mem" in names:
        return layer.mem
    if "pos_mem" in names and layer.pos_mem is not None:
        return layer.pos_mem + layer.neg_mem
    return None


@torch.no_grad()
def record_sample(model: nn.Module, x_seq: Tensor) -> tuple[dict[str, Tensor], tuple[str, Tensor] | None]:
    """Step ``model`` through ``x_seq`` (``[T, 1, ...]``) recording firing outputs and the last layer's membrane.

    Returns ``({layer path: [T, neurons]}, (path, [T, neurons]) or None)``.
    """
    fire = firing_layers(model)
    layers = dict(iter_layers(model))
    readout = next(reversed(layers.items()), None)
    spikes: dict[str, list[Tensor]] = {path: [] for path in fire}
    membrane: list[Tensor] = []
    handles = [
        layer.register_forward_hook(lambda _m, _i, out, path=path: spikes[path].append(out[0].flatten().cpu()))
        for path, layer in fire.items()
    ]
    try:
        for x_t in x_seq:
            model(x_t)
            if readout is not None:
                mem = _membrane(readout[1])
                if mem is not None:
                    membrane.append(mem[0].flatten().float().cpu())
    finally:
        for handle in handles:
            handle.remove()
    traces = (readout[0], torch.stack(membrane)) if membrane else None
    return {path: torch.stack(v) for path, v in spikes.items() if v}, traces


def plot_raster(spikes: dict[str, Tensor], membrane: tuple[str, Tensor] | None, path: str | Path, title: str = "") -> None:
    """One raster per firing layer (neuron vs step, dot size ~ |event|) and the membrane traces below."""
    plt = _pyplot()
    rows = len(spikes) + (membrane is not None)
    fig, axes = plt.subplots(max(rows, 1), 1, figsize=(8, 2.2 * max(rows, 1)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, (name, events) in zip(axes, spikes.items()):
        steps, neurons = torch.nonzero(events.abs() > 0.5, as_tuple=True)
        ax.scatter(steps.numpy(), neurons.numpy(), s=2, c="black", marker="|")
        ax.set_ylabel(f"layer {name}\nneuron")
        ax.set_ylim(-0.5, events.shape[1] - 0.5)
    if membrane is not None:
        name, trace = membrane
        ax = axes[-1]
        for neuron in range(min(trace.shape[1], 10)):
            ax.plot(trace[:, neuron].numpy(), label=str(neuron), lw=1)
        ax.set_ylabel(f"layer {name}\nmembrane")
        if trace.shape[1] <= 10:
            ax.legend(fontsize=6, ncol=5, loc="upper left")
    axes[-1].set_xlabel("step")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
