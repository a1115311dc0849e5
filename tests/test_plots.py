"""The run plots, read back through their matplotlib Figure: titles, panel names, integer steps, event colours."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tracetorch as tt
from tracetorch.functional import round_ste
from tracetorch.training.plots import NEGATIVE, POSITIVE, plot_curves, plot_raster, record_sample

pytest.importorskip("matplotlib")
from matplotlib.colors import to_rgba  # noqa: E402


def integer_ticks(ax) -> bool:  # type: ignore[no-untyped-def]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    return len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def ternary_model() -> tt.Sequential:
    torch.manual_seed(0)
    model = tt.Sequential(nn.Linear(8, 6), tt.snn.RLIT(6, quant_fn=round_ste()), nn.Linear(6, 3), tt.snn.LI(3))
    with torch.no_grad():
        model[0].weight.mul_(6)  # strong drive: both signs fire
    return model


def test_raster_names_panels_colours_ternary_events_by_sign_and_titles_the_prediction(tmp_path):
    model = ternary_model()
    x = (torch.rand(12, 1, 8) < 0.5).float()
    spikes, membrane = record_sample(model, x)
    events = spikes["RLIT (layer 1)"]
    assert set(events.unique().tolist()) == {-1.0, 0.0, 1.0}
    fig = plot_raster(spikes, membrane, tmp_path / "raster.png", "test sample 0 (label 2)", inputs=x, predicted=1)
    assert (tmp_path / "raster.png").stat().st_size > 0
    inputs_ax, rlit_ax, readout_ax = fig.axes
    assert inputs_ax.get_title() == "test sample 0 (label 2); predicted 1"
    assert [ax.get_ylabel() for ax in fig.axes] == ["input\nfeature", "RLIT (layer 1)\nneuron", "LI (layer 3)\nmembrane"]
    assert readout_ax.get_xlabel() == "step" and all(integer_ticks(ax) for ax in fig.axes)
    positive, negative = rlit_ax.collections
    assert tuple(positive.get_edgecolor()[0]) == to_rgba(POSITIVE) and tuple(negative.get_edgecolor()[0]) == to_rgba(NEGATIVE)
    for collection, sign in ((positive, 1), (negative, -1)):
        drawn = sorted(map(tuple, collection.get_offsets().tolist()))
        expected = sorted((float(s), float(n)) for s, n in torch.nonzero(events == sign).tolist())
        assert drawn == expected
    # the input panel shows every input spike at (step, feature)
    (inputs_drawn,) = inputs_ax.collections
    assert len(inputs_drawn.get_offsets()) == int(x.sum())
    # the readout's membrane: one line per class, equal to the recorded trace
    assert [line.get_ydata().tolist() for line in readout_ax.lines] == membrane[1].t().tolist()


def test_binary_layers_and_analog_inputs(tmp_path):
    torch.manual_seed(1)
    model = tt.Sequential(nn.Linear(5, 4), tt.snn.LIB(4, quant_fn=round_ste()), nn.Linear(4, 2), tt.snn.LI(2))
    with torch.no_grad():
        model[0].weight.mul_(4)
    x = torch.rand(7, 1, 5)  # direct (analog) input: a heat map, not events
    spikes, membrane = record_sample(model, x)
    fig = plot_raster(spikes, membrane, tmp_path / "raster.png", inputs=x)
    inputs_ax, lib_ax, _ = fig.axes
    assert inputs_ax.get_title() == "" and len(inputs_ax.images) == 1
    assert torch.equal(torch.as_tensor(inputs_ax.images[0].get_array()), x[:, 0].t())
    (binary,) = lib_ax.collections  # no negative events: one colour, no legend
    assert tuple(binary.get_edgecolor()[0]) == to_rgba(POSITIVE) and lib_ax.get_legend() is None
    assert lib_ax.get_ylabel() == "LIB (layer 1)\nneuron"
    bare = plot_raster(spikes, None, tmp_path / "bare.png", predicted=0)
    assert bare.axes[0].get_title() == "predicted 0" and len(bare.axes) == 1


def test_curves_title_carries_the_run_name_and_settings_and_epochs_are_integers(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e, "train_accuracy": 0.5 + e / 20,
                "test_accuracy": 0.4 + e / 20} for e in range(1, 4)]
    fig = plot_curves(history, tmp_path / "curves.png", run_name="runs/a", settings={"model": "mlp", "lr": 0.003})
    assert fig._suptitle.get_text() == "runs/a  |  model=mlp, lr=0.003"
    loss_ax, accuracy_ax = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    assert all(ax.get_xlabel() == "epoch" and integer_ticks(ax) for ax in fig.axes)
    assert [line.get_ydata().tolist() for line in accuracy_ax.lines] == [[h[f"{s}_accuracy"] for h in history]
                                                                        for s in ("train", "test")]
    assert plot_curves(history, tmp_path / "plain.png")._suptitle is None
