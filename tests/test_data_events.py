"""Event datasets through tonic: files written in N-MNIST's, SHD's and DVS Gesture's own formats, read by tonic,
binned, cached, and trained on for one epoch by tt-train."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

tonic = pytest.importorskip("tonic")

from tracetorch.cli.config import check_overrides  # noqa: E402
from tracetorch.cli.errors import USER_ERRORS  # noqa: E402

from tracetorch.data import events as ev  # noqa: E402
from tracetorch.data.datasets import DatasetMissingError, load_dataset  # noqa: E402
from tracetorch.data.event_files import (  # noqa: E402
    random_events,
    write_nmnist,
    write_nmnist_bin,
    write_shd,
    write_synthetic,
)
from tracetorch.training import Trainer  # noqa: E402

NAMES = ("nmnist", "shd", "dvs_gesture")
SENSORS = {"nmnist": (34, 34, 2), "shd": (700, 1, 1), "dvs_gesture": (128, 128, 2)}
BINS = 8


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("events")
    written = {name: write_synthetic(name, folder, num_train=6, num_test=3, events_per_sample=300, seed=i)
               for i, name in enumerate(NAMES)}
    return folder, written


def _as_read(name: str, events: np.ndarray) -> tuple[np.ndarray, ...]:
    """x, y, p, t of the written events as the file stores them (SHD: float32 seconds; others: exact)."""
    t = events["t"].astype(np.float64)
    if name == "shd":
        t = (events["t"] / 1e6).astype(np.float32).astype(np.float64) * 1e6
    return events["x"], events["y"], events["p"], t


def reference_frames(name: str, events: np.ndarray, bins: int, *, binarize: bool = True, time_window: float | None = None,
                     spatial: float = 1.0) -> np.ndarray:
    """tonic's binning convention computed directly from the written events (module docstring of events.py)."""
    x, y, p, t = _as_read(name, events)
    width, height, polarities = SENSORS[name]
    if spatial != 1.0:
        x, y = (x * spatial).astype(np.int64), (y * spatial).astype(np.int64)
        width, height = int((width - 1) * spatial) + 1, int((height - 1) * spatial) + 1
    frames = np.zeros((bins, polarities, height, width), dtype=np.int64)
    width_us = time_window if time_window is not None else (t[-1] - t[0]) // bins
    for k in range(bins):
        start = k * width_us + t[0]
        inside = (t >= start) & (t < start + width_us)
        np.add.at(frames, (k, p[inside] if polarities > 1 else 0, y[inside] if height > 1 else 0, x[inside]), 1)
    frames = (frames > 0).astype(np.int64) if binarize else frames
    return frames.reshape(bins, width) if name == "shd" else frames


@pytest.mark.parametrize("name", NAMES)
def test_written_files_load_with_counts_shapes_and_spikes(root, name):
    folder, written = root[0], root[1][name]
    splits = load_dataset({"name": name, "root": str(folder), "download": False, "n_time_bins": BINS, "cache": False})
    shapes = {"nmnist": (2, 34, 34), "shd": (700,), "dvs_gesture": (2, 128, 128)}
    assert (len(splits.train), len(splits.test)) == (6, 3) and splits.sequence and splits.num_steps == BINS
    assert splits.input_shape == shapes[name] and splits.num_classes == {"nmnist": 10, "shd": 20, "dvs_gesture": 11}[name]
    for part, items in ((splits.train, written["train"]), (splits.test, written["test"])):
        order = np.argsort([label for _, label in items], kind="stable") if name == "nmnist" else range(len(items))
        expected = [items[i] for i in order]  # N-MNIST files sort by digit folder
        assert part.y.tolist() == [label for _, label in expected]
        assert part.x.dtype == torch.uint8
        for row, (events, _) in enumerate(expected):
            reference = reference_frames(name, events, BINS)
            assert part.x[row].numpy().astype(np.int64).tolist() == reference.tolist()
            assert 0 < int(part.x[row].sum()) <= len(events)
    x, y = splits.batch(splits.train, torch.arange(4))
    assert x.shape == (BINS, 4, *shapes[name]) and set(x.unique().tolist()) <= {0.0, 1.0} and x.dtype == torch.float32


def test_counts_time_window_and_downsample(root):
    folder, written = root
    options = {"root": str(folder), "download": False, "cache": False}
    counts = load_dataset({"name": "nmnist", **options, "n_time_bins": BINS, "binarize": False})
    window = load_dataset({"name": "nmnist", **options, "n_time_bins": 9, "time_window": 40_000.0})
    half = [{"Downsample": {"spatial_factor": 0.5}}]
    small = load_dataset({"name": "nmnist", **options, "n_time_bins": BINS, "transforms": half})
    assert small.input_shape == (2, 17, 17) and counts.train.x.dtype == torch.int16
    order = np.argsort([label for _, label in written["nmnist"]["train"]], kind="stable")
    for row, index in enumerate(order):
        events = written["nmnist"]["train"][index][0]
        assert counts.train.x[row].numpy().tolist() == reference_frames("nmnist", events, BINS, binarize=False).tolist()
        duration = events["t"][-1] - events["t"][0]
        assert int(counts.train.x[row].sum()) == int((events["t"] < events["t"][0] + duration // BINS * BINS).sum())
        full = reference_frames("nmnist", events, 9, time_window=40_000.0)  # 300 ms recordings: 8 windows, the 9th padded
        assert window.train.x[row].numpy().tolist() == full.tolist() and int(window.train.x[row, 8].sum()) == 0
        assert small.train.x[row].numpy().tolist() == reference_frames("nmnist", events, BINS, spatial=0.5).tolist()


def test_unsorted_timestamps_are_binned_in_time_order(tmp_path):
    rng = np.random.default_rng(5)
    samples = {split: [(random_events(rng, 200, (34, 34, 2), 300_000), label) for label in (0, 1)]
               for split in ("train", "test")}
    shuffled = {split: [(events[rng.permutation(len(events))], label) for events, label in items]
                for split, items in samples.items()}
    write_nmnist(tmp_path, shuffled)
    splits = load_dataset({"name": "nmnist", "root": str(tmp_path), "download": False, "n_time_bins": 6, "cache": False})
    for row, (events, _) in enumerate(samples["train"]):
        assert splits.train.x[row].numpy().astype(np.int64).tolist() == reference_frames("nmnist", events, 6).tolist()


def test_generic_tonic_entry_matches_the_named_one(root):
    folder, _ = root
    options = {"root": str(folder), "download": False, "n_time_bins": 4, "cache": False}
    named = load_dataset({"name": "nmnist", **options})
    generic = load_dataset({"name": "tonic", "dataset": "NMNIST", **options})
    assert torch.equal(named.train.x, generic.train.x) and torch.equal(named.test.y, generic.test.y)
    assert generic.num_classes == 10
    with pytest.raises(ValueError, match="tonic has no dataset 'NOPE'"):
        load_dataset({"name": "tonic", "dataset": "NOPE", **options})
    with pytest.raises(ValueError, match=r"dataset 'nmnist': unknown option\(s\) n_bins"):
        load_dataset({"name": "nmnist", "n_bins": 3, **options})
    with pytest.raises(ValueError, match="data.transforms: 'Blur' is not a tonic event transform"):
        load_dataset({"name": "nmnist", **options, "transforms": [{"Blur": {}}]})


def test_generic_entry_reads_spiking_speech_commands(tmp_path):
    rng = np.random.default_rng(3)
    samples = {split: [(random_events(rng, 80, (700, 1, 1), 1_000_000), label) for label in labels]
               for split, labels in (("train", [0, 34, 7]), ("test", [5, 2]))}
    write_shd(tmp_path, samples, dataset="SSC")
    splits = load_dataset({"name": "tonic", "dataset": "SSC", "root": str(tmp_path), "download": False, "n_time_bins": 5,
                           "train_kwargs": {"split": "train"}, "test_kwargs": {"split": "test"}, "cache": False})
    assert splits.input_shape == (700,) and splits.num_classes == 35 and splits.train.y.tolist() == [0, 34, 7]
    for row, (events, _) in enumerate(samples["test"]):
        assert splits.test.x[row].numpy().astype(np.int64).tolist() == reference_frames("shd", events, 5).tolist()
    with pytest.raises(ev.EventFileError, match=r"SSC: train labels span \[0, 34\], outside the 20 classes"):
        load_dataset({"name": "tonic", "dataset": "SSC", "root": str(tmp_path), "download": False, "num_classes": 20,
                      "train_kwargs": {"split": "train"}, "test_kwargs": {"split": "test"}, "cache": False})


def test_cache_bins_once_and_is_plain_npy(root, tmp_path, monkeypatch):
    folder, _ = root
    calls = []
    real = ev.Binning.__call__
    monkeypatch.setattr(ev.Binning, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    config = {"name": "shd", "root": str(folder), "download": False, "n_time_bins": BINS, "cache_dir": str(tmp_path)}
    first = load_dataset(config)
    assert len(calls) == 9
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert [e.split("-")[:2] for e in entries] == [["shd", "test"], ["shd", "train"]]
    train_dir = tmp_path / entries[1]
    assert sorted(p.name for p in train_dir.iterdir()) == ["meta.json", "x.npy", "y.npy"]
    meta = json.loads((train_dir / "meta.json").read_text())
    assert meta["x_shape"] == [6, BINS, 700] and meta["params"]["n_time_bins"] == BINS
    assert np.array_equal(np.load(train_dir / "x.npy", allow_pickle=False), first.train.x.numpy())
    second = load_dataset(config)
    assert len(calls) == 9 and torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)
    load_dataset({**config, "n_time_bins": 4})  # other binning: another key, binned anew
    assert len(calls) == 18 and len(list(tmp_path.iterdir())) == 4
    # a hostile or damaged cache entry is never unpickled: replaced by an object array, it is rebuilt
    (train_dir / "x.npy").unlink()  # (first.train.x maps the old file; overwriting it in place would pull it away)
    np.save(train_dir / "x.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning, match="unusable"):
        third = load_dataset(config)
    assert torch.equal(first.train.x, third.train.x) and len(calls) == 24
    # touching a source file changes the key
    source = folder / "SHD" / "shd_train.h5"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    load_dataset(config)
    assert len(calls) == 30


def test_unwritable_cache_falls_back_to_memory(root, tmp_path):
    folder, _ = root
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot write the event cache"):
        splits = load_dataset({"name": "nmnist", "root": str(folder), "download": False, "n_time_bins": 4,
                               "cache_dir": str(blocker / "sub")})
    assert len(splits.train) == 6


def test_missing_files_name_the_expected_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(DatasetMissingError, match=rf"NMNIST files not found .*no network to reach .*expected "
                                                  rf"{tmp_path}/NMNIST/Train/<digit>/<id>.bin"):
        load_dataset({"name": "nmnist", "root": str(tmp_path), "download": "auto"})
    with pytest.raises(DatasetMissingError, match=rf"data.download is false.*{tmp_path}/SHD/shd_train.h5"):
        load_dataset({"name": "shd", "root": str(tmp_path), "download": False})
    write_synthetic("dvs_gesture", tmp_path, num_train=2, num_test=0)  # train only: still missing
    with pytest.raises(DatasetMissingError, match="ibmGestureTest"):
        load_dataset({"name": "dvs_gesture", "root": str(tmp_path), "download": False})


def _fresh(tmp_path, name):
    write_synthetic(name, tmp_path, num_train=3, num_test=2, events_per_sample=50)
    return {"name": name, "root": str(tmp_path), "download": False, "n_time_bins": 4, "cache": False}


def test_corrupt_nmnist_files_name_the_file(tmp_path):
    config = _fresh(tmp_path, "nmnist")
    victim = sorted((tmp_path / "NMNIST" / "Train").glob("*/*.bin"))[1]
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(ev.EventFileError, match=rf"corrupt N-MNIST file {victim}: .*not a whole number"):
        load_dataset(config)
    events = np.zeros(3, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
    events["x"], events["t"] = [1, 60, 2], [0, 5, 9]
    write_nmnist_bin(victim, events)
    with pytest.raises(ev.EventFileError, match=rf"corrupt event file {victim}: x in \[1, 60\], outside the sensor's 34"):
        load_dataset(config)


def test_corrupt_shd_and_dvs_files_name_the_file(tmp_path):
    config = _fresh(tmp_path, "shd")
    h5 = tmp_path / "SHD" / "shd_test.h5"
    h5.write_bytes(b"\x00" * 100)
    with pytest.raises(ev.EventFileError, match=rf"{tmp_path / 'SHD'}"):
        load_dataset(config)
    config = _fresh(tmp_path, "dvs_gesture")
    victim = sorted((tmp_path / "DVSGesture" / "ibmGestureTrain").glob("*/*.npy"))[0]
    np.save(victim, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ev.EventFileError, match=rf"cannot read {victim}: ValueError: .*allow_pickle"):
        load_dataset(config)


def test_tt_train_one_epoch_on_nmnist_files(root, tmp_path):
    from train_support import env_with_support, run_cli

    folder, _ = root
    run_dir = tmp_path / "run"
    env = {**env_with_support(), "TRACETORCH_KERNELS": "reference"}
    done = run_cli(["tracetorch.cli.train", "data=nmnist", "model=conv", f"data.root={folder}", "data.download=false",
                    "encoder.num_steps=6", "data.batch_size=4", "trainer.epochs=1", "trainer.device=cpu",
                    "trainer.progress=false", "trainer.plots=false", "trainer.checkpoint=false", f"hydra.run.dir={run_dir}"],
                   tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data nmnist (6 train / 3 test) steps 6" in " ".join(done.stdout.split())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 1 and records[0]["step"] == 2
    assert 0 < records[0]["spike_rate"] < 1 and 0.0 <= records[0]["test_accuracy"] <= 1.0
    config = check_overrides(["data=shd", f"data.root={tmp_path / 'none'}", "data.download=false"])
    with pytest.raises(USER_ERRORS, match=r"^SHD files not found under data.root=.*none/SHD/shd_train.h5"):
        Trainer(config)


def test_events_encoder_refuses_images():
    from tracetorch.data.encoders import make_encoder

    with pytest.raises(ValueError, match="encoder 'events' is for datasets already binned in time"):
        make_encoder({"name": "events", "num_steps": 5})


def test_without_tonic_the_error_names_the_extra(root, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tonic", None)
    with pytest.raises(ValueError, match=r"tonic is not installed: pip install 'tracetorch\[events\]'"):
        load_dataset({"name": "nmnist", "root": str(root[0]), "download": False})
