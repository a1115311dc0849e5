"""States: save/load round trips (.pt, .safetensors), safety against pickles and bad files,
dtype/device following, state_dict round trips."""

from __future__ import annotations

import copy
import pickle
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import tracetorch as tt


class Nested(tt.Model):
    """Layers in an nn.Sequential, a python list, a dict and a plain object attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(4, 5), tt.snn.SLIB(5))
        self.blocks = [tt.snn.DSRLITS(5, pos_rec_weight=0.4, neg_rec_weight=-0.3), tt.snn.LIEMA(5)]
        self.heads = {"left": tt.snn.DLI(5), "right": tt.snn.RLIT(5, rec_weight=0.5)}
        self.box = SimpleNamespace(lif=tt.snn.SRLIB(5, rec_weight=-0.2))

    def forward(self, x):
        h = self.seq(x)
        h = self.blocks[1](self.blocks[0](h))
        h = self.heads["left"](h) + self.heads["right"](h)
        return self.box.lif(h)


STATE_KEYS = {
    "seq.1.syn", "seq.1.mem",
    "blocks.0.pos_syn", "blocks.0.neg_syn", "blocks.0.pos_rec", "blocks.0.neg_rec", "blocks.0.prev_output",
    "blocks.0.pos_mem", "blocks.0.neg_mem", "blocks.1.mem",
    "heads.left.pos_mem", "heads.left.neg_mem",
    "heads.right.rec", "heads.right.prev_output", "heads.right.mem",
    "box.lif.syn", "box.lif.rec", "box.lif.prev_output", "box.lif.mem",
}


def _model_and_inputs(seed=0):
    torch.manual_seed(seed)
    model = Nested()
    xs = torch.randn(12, 3, 4) * 2
    return model, xs


def test_model_finds_layers_everywhere():
    model, _ = _model_and_inputs()
    assert set(model.layers()) == {"seq.1", "blocks.0", "blocks.1", "heads.left", "heads.right", "box.lif"}
    assert set(model.save_states()) == STATE_KEYS
    assert all(v.numel() == 0 for v in model.save_states().values())  # never called: all None


def test_iter_layers_order_sharing_and_changes_while_iterating():
    from tracetorch.core.states import iter_layers

    model, _ = _model_and_inputs()
    model.again = SimpleNamespace(lif=model.blocks[0])  # reachable twice: named once, by the path found first
    paths = []
    for path, _layer in iter_layers(model):
        paths.append(path)
        model.late = tt.snn.LIB(5)  # added while iterating: the walk was done before the first yield
    assert paths == ["seq.1", "blocks.0", "blocks.1", "heads.left", "heads.right", "box.lif"]
    assert "late" in dict(iter_layers(model))
    assert list(iter_layers(torch.zeros(3))) == [] and list(iter_layers(len)) == []


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".pth"])
def test_file_round_trip_continues_identically(tmp_path, suffix):
    model, xs = _model_and_inputs()
    with torch.no_grad():
        for x in xs[:6]:
            model(x)
        path = tmp_path / f"states{suffix}"
        model.save_states_file(path)
        fresh = copy.deepcopy(model)
        fresh.zero_states()
        assert all(v.numel() == 0 for v in fresh.save_states().values())
        fresh.load_states_file(path)
        for key, value in model.save_states().items():
            assert torch.equal(fresh.save_states()[key], value), key
        for x in xs[6:]:
            assert torch.equal(fresh(x), model(x))


def test_in_memory_round_trip_and_none_states():
    model, xs = _model_and_inputs()
    with torch.no_grad():
        model(xs[0])
        saved = model.save_states()
        model.box.lif.zero_states()
        partial = model.save_states()
        assert partial["box.lif.mem"].shape == (0,)
        model(xs[1])
        model.load_states(partial)
        assert model.box.lif.mem is None and model.seq[1].mem is not None
        model.load_states(saved)
        assert torch.equal(model.box.lif.mem, saved["box.lif.mem"])
        saved["box.lif.mem"].add_(1)  # loaded states are copies, not views of the caller's tensors
        assert not torch.equal(model.box.lif.mem, saved["box.lif.mem"])
        again = model.save_states()
        again["seq.1.mem"].add_(1)  # and so are saved ones
        assert not torch.equal(model.seq[1].mem, again["seq.1.mem"])


def test_zero_and_detach_states():
    model, xs = _model_and_inputs()
    out = model(xs[0])
    assert model.blocks[0].pos_mem.requires_grad
    model.detach_states()
    assert not any(v.requires_grad for v in model.save_states().values())
    assert all(getattr(layer, s) is not None for layer in model.layers().values() for s in layer.state_names())
    assert out.requires_grad
    model.zero_states()
    assert all(getattr(layer, s) is None for layer in model.layers().values() for s in layer.state_names())


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_loading_never_unpickles_objects(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"seq.1.mem": _Evil(str(marker))}, handle)
    torch.save({"seq.1.mem": _Evil(str(marker))}, tmp_path / "evil2.pt")
    model, _ = _model_and_inputs()
    for file in (path, tmp_path / "evil2.pt"):
        with pytest.raises(tt.StateFileError, match=rf"^{re.escape(str(file))}: not a readable PyTorch \(weights_only\) "
                           r"state file \(UnpicklingError: "):
            model.load_states_file(file)
        assert not marker.exists()
    with open(path, "rb") as handle:  # the file really is dangerous to a plain unpickler
        pickle.load(handle)
    assert marker.exists()


def _stepped_model():
    model, xs = _model_and_inputs()
    with torch.no_grad():
        for x in xs[:3]:
            model(x)
    return model


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_and_truncated_files(tmp_path, suffix):
    model = _stepped_model()
    before = model.save_states()
    good = tmp_path / f"good{suffix}"
    model.save_states_file(good)
    data = good.read_bytes()
    kind = "safetensors" if suffix == ".safetensors" else r"PyTorch \(weights_only\)"
    for label, content in (("truncated", data[: len(data) // 2]), ("garbage", b"\x00not a state file" * 10), ("empty", b"")):
        bad = tmp_path / f"{label}{suffix}"
        bad.write_bytes(content)
        with pytest.raises(tt.StateFileError, match=rf"^{re.escape(str(bad))}: not a readable {kind} state file \("):
            model.load_states_file(bad)
        after = model.save_states()
        assert all(torch.equal(after[k], before[k]) for k in before)


def test_missing_file_and_unknown_suffix(tmp_path):
    model = _stepped_model()
    with pytest.raises(tt.StateFileError, match=rf"^{re.escape(str(tmp_path / 'nope.pt'))}: no such file$"):
        model.load_states_file(tmp_path / "nope.pt")
    with pytest.raises(tt.StateFileError, match=rf"^{re.escape(str(tmp_path / 's.npz'))}: unknown file type '.npz'; "
                       r"use one of \.safetensors, \.pt, \.pth$"):
        model.save_states_file(tmp_path / "s.npz")


def test_file_that_is_not_a_mapping_of_tensors(tmp_path):
    model = _stepped_model()
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(tt.StateFileError, match=rf"^{re.escape(str(path))}: expected a mapping of names to tensors, got list$"):
        model.load_states_file(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_mismatched_states_are_refused_and_leave_the_model_unchanged(tmp_path, suffix):
    model = _stepped_model()
    before = model.save_states()
    cases = {
        "missing": ({k: v for k, v in before.items() if k != "box.lif.mem"}, "missing states: box.lif.mem"),
        "extra": ({**before, "box.lif.extra": torch.zeros(3, 5)}, "unexpected states: box.lif.extra"),
        "shape": ({**before, "heads.left.pos_mem": torch.zeros(3, 4)},
                  "heads.left.pos_mem: shape (3, 4) does not have num_neurons=5 at dim=-1"),
        "batch": ({**before, "heads.left.neg_mem": torch.zeros(1, 5)},
                  "heads.left.neg_mem: shape (1, 5) differs from heads.left.pos_mem of shape (3, 5)"),
        "several": ({k: v for k, v in before.items() if k != "seq.1.syn"} | {"x.y": torch.ones(1)},
                    "missing states: seq.1.syn; unexpected states: x.y"),
    }
    for label, (states, message) in cases.items():
        path = tmp_path / f"{label}{suffix}"
        tt.core.state_io.write_state_file(path, states)
        with pytest.raises(tt.StateFileError, match=rf"^{re.escape(str(path))}: cannot load states: {re.escape(message)}$"):
            model.load_states_file(path)
        with pytest.raises(ValueError, match=rf"^cannot load states: {re.escape(message)}$"):
            model.load_states(states)
        after = model.save_states()
        assert all(torch.equal(after[k], before[k]) for k in before), label
    with pytest.raises(ValueError, match=r"^cannot load states: seq\.1\.mem: expected a tensor, got list$"):
        model.load_states({**before, "seq.1.mem": [1.0, 2.0]})
    # strict=False: extra keys ignored, missing states left as they are
    model.load_states({"seq.1.mem": torch.ones(3, 5), "other.mem": torch.ones(1)}, strict=False)
    assert torch.equal(model.seq[1].mem, torch.ones(3, 5))
    assert torch.equal(model.seq[1].syn, before["seq.1.syn"])


class Registered(tt.Model):
    """Every layer a registered submodule, so that state_dict() and .to() see all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(4, 5), tt.snn.SLIB(5), tt.snn.DSRLITS(5, pos_rec_weight=0.4))
        self.heads = nn.ModuleDict({"left": tt.snn.DLI(5), "right": tt.snn.RLIT(5, rec_weight=0.5)})

    def forward(self, x):
        h = self.seq(x)
        return self.heads["left"](h) + self.heads["right"](h)


def test_state_dict_round_trips_parameters():
    torch.manual_seed(0)
    model, xs = Registered(), torch.randn(6, 3, 4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("raw_rec_weight") or name.endswith("raw_bias"):
                p.add_(torch.randn(p.shape))
    other = Registered()
    other.load_state_dict(model.state_dict())
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    with torch.no_grad():
        assert torch.equal(model.run(xs), other.run(xs))
    sd = tt.snn.DSRLITS(3, learn_pos_beta=False).state_dict()
    assert "raw_pos_beta" in sd and "raw_neg_beta" in sd  # buffers are saved too


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", ["LI", "DSLIEMA", "SRLIB", "DSRLITS"])
def test_states_follow_input_dtype(name, dtype):
    layer = tt.snn.get_layer_class(name)(4)
    out = layer(torch.randn(2, 4).to(dtype))
    assert out.dtype == dtype and out.device.type == "cpu"
    for state, value in layer.states():
        assert value.dtype == dtype and value.shape == (2, 4), state
    out = layer(torch.randn(2, 4).to(dtype))
    assert out.dtype == dtype
    assert all(p.dtype == torch.float32 for p in layer.parameters())  # parameters keep their own dtype


def test_model_to_float64_converts_held_states_and_parameters():
    model = Registered()
    model(torch.randn(3, 4))
    assert set(model.save_states()) >= {"seq.1.mem", "seq.2.pos_rec", "heads.right.prev_output"}
    model.to(torch.float64)
    for key, value in model.save_states().items():
        assert value.dtype == torch.float64, key
    assert all(p.dtype == torch.float64 for p in model.parameters())
    out = model(torch.randn(3, 4, dtype=torch.float64))
    assert out.dtype == torch.float64
