"""PNG plots of a run: learning curves, and a spike raster with membrane traces.

Both use matplotlib's non-interactive ``Agg`` backend, so they work on headless machines, and
both return the (closed) matplotlib ``Figure`` so that its titles, labels and artists can be
inspected. Panels are named by layer type and position in the model (``RLIT (layer 1)``);
events are coloured by sign (:data:`POSITIVE` / :data:`NEGATIVE`), so ternary layers show both.

Example:
    >>> import tempfile, os
    >>> from tracetorch.training.plots import plot_curves
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> history = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.1, "train_accuracy": 0.5, "test_accuracy": 0.4}]
    >>> fig = plot_curves(history, path, run_name="digits-mlp", settings={"lr": 0.003, "steps": 20})
    >>> os.path.getsize(path) > 0, fig._suptitle.get_text()
    (True, 'digits-mlp  |  lr=0.003, steps=20')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.core.model import iter_layers
from tracetorch.training.metrics import firing_layers

__all__ = ["plot_curves", "plot_returns", "record_sample", "plot_raster", "layer_label", "POSITIVE", "NEGATIVE"]

POSITIVE = "#d62728"  # red: +1 events (and every binary spike)
NEGATIVE = "#1f77b4"  # blue: -1 events of ternary layers
EVENT = 0.5  # |output| above this counts as an event (surrogate-valued outputs lie in (-1, 1))


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def layer_label(path: str, layer: nn.Module) -> str:
    """A panel's name: the layer's type and its position in the model, e.g. ``"RLIT (layer 1)"``."""
    return f"{type(layer).__name__} (layer {path})"


def _save(plt: Any, fig: Any, path: str | Path) -> Any:
    """Lay out, write the PNG and free the figure (it stays inspectable); returns it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def plot_curves(history: list[dict[str, Any]], path: str | Path, *, run_name: str = "",
                settings: Mapping[str, Any] | None = None) -> Any:
    """Loss and accuracy per epoch, train and test, side by side; returns the ``Figure``.

    ``run_name`` and ``settings`` (e.g. ``{"model": "mlp", "lr": 3e-3, "steps": 20}``) make the title.
    """
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for split in ("train", "test"):
            ax.plot(epochs, [h.get(f"{split}_{key}") for h in history], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        _integer_ticks(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    described = ", ".join(f"{k}={v}" for k, v in (settings or {}).items())
    title = "  |  ".join(part for part in (run_name, described) if part)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def plot_returns(history: list[dict[str, Any]], path: str | Path, *, run_name: str = "") -> Any:
    """Return per episode and its mean over the last 100 episodes (``trainer.learning=reflect``); returns the ``Figure``."""
    plt = _pyplot()
    episodes = [h["episode"] for h in history]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.plot(episodes, [h["return"] for h in history], lw=0.6, alpha=0.5, label="return")
    ax.plot(episodes, [h["mean_return_100"] for h in history], lw=2, label="mean of the last 100")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    _integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend()
    if run_name:
        ax.set_title(run_name, fontsize=10)
    return _save(plt, fig, path)


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

    Returns ``({panel name: [T, neurons]}, (panel name, [T, neurons]) or None)``, the names from :func:`layer_label`.
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
    traces = (layer_label(*readout), torch.stack(membrane)) if readout is not None and membrane else None
    return {layer_label(path, fire[path]): torch.stack(v) for path, v in spikes.items() if v}, traces


def _events(ax: Any, events: Tensor) -> None:
    """Positive events in :data:`POSITIVE`, negative ones in :data:`NEGATIVE` (neuron vs step)."""
    for sign, colour, label in ((1, POSITIVE, "+1"), (-1, NEGATIVE, "-1")):
        steps, neurons = torch.nonzero(sign * events > EVENT, as_tuple=True)
        if sign > 0 or len(steps):
            ax.scatter(steps.numpy(), neurons.numpy(), s=6, color=colour, marker="|", label=label)
    if (events < -EVENT).any():
        ax.legend(fontsize=6, loc="upper right", markerscale=2)
    ax.set_ylim(-0.5, events.shape[1] - 0.5)


def plot_raster(spikes: dict[str, Tensor], membrane: tuple[str, Tensor] | None, path: str | Path, title: str = "", *,
                inputs: Tensor | None = None, predicted: int | None = None) -> Any:
    """One raster per firing layer (neuron vs step) and the membrane traces below; returns the ``Figure``.

    Args:
        spikes: ``{panel name: [T, neurons]}`` (:func:`record_sample`).
        membrane: ``(panel name, [T, neurons])`` of the readout, or ``None``.
        path: the PNG to write.
        title: e.g. ``"test sample 0 (label 3)"``.
        inputs: the encoded input ``[T, ...]`` (a batch of one is flattened), drawn first: events when it
            holds only -1/0/1, a heat map otherwise.
        predicted: the predicted class, added to the title.
    """
    plt = _pyplot()
    rows = (inputs is not None) + len(spikes) + (membrane is not None)
    fig, axes = plt.subplots(max(rows, 1), 1, figsize=(8, 2.2 * max(rows, 1)), sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    panels = iter(axes)
    if inputs is not None:
        ax = next(panels)
        flat = inputs.detach().float().cpu().reshape(inputs.shape[0], -1)
        if bool(torch.isin(flat, torch.tensor([-1.0, 0.0, 1.0])).all()):
            _events(ax, flat)
        else:
            ax.imshow(flat.t().numpy(), aspect="auto", origin="lower", interpolation="nearest", cmap="viridis")
        ax.set_ylabel("input\nfeature")
    for ax, (name, events) in zip(panels, spikes.items()):
        _events(ax, events)
        ax.set_ylabel(f"{name}\nneuron")
    if membrane is not None:
        name, trace = membrane
        ax = axes[-1]
        for neuron in range(min(trace.shape[1], 10)):
            ax.plot(trace[:, neuron].numpy(), label=str(neuron), lw=1)
        ax.set_ylabel(f"{name}\nmembrane")
        if trace.shape[1] <= 10:
            ax.legend(fontsize=6, ncol=5, loc="upper left")
    axes[-1].set_xlabel("step")
    _integer_ticks(axes[-1])
    full = "; ".join(part for part in (title, None if predicted is None else f"predicted {predicted}") if part)
    if full:
        axes[0].set_title(full)
    return _save(plt, fig, path)
