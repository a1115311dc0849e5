"""Writing small event datasets in the on-disk formats tonic reads (N-MNIST, SHD, DVS Gesture).

The files follow the layouts of the published datasets, as tonic expects them once extracted
under ``root`` (see :data:`tracetorch.data.events.LAYOUTS`):

* N-MNIST: ``NMNIST/{Train,Test}/<digit>/<id>.bin``, 5 bytes per event: ``x``, ``y``, then
  the polarity in bit 7 and the 23-bit timestamp (microseconds) in the remaining 3 bytes;
* SHD: ``SHD/shd_{train,test}.h5`` with variable-length ``spikes/times`` (seconds) and
  ``spikes/units`` (0..699) per sample, ``labels``, ``extra/keys`` and ``extra/speaker``;
* DVS Gesture (tonic's preprocessed release): ``DVSGesture/ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy``,
  one ``[N, 4]`` array of ``x, y, p, t`` (``t`` in milliseconds) per gesture.

They exist to try and test the pipeline without the real downloads: the tests and
``benchmarks/events_bench.py`` write a few samples, tonic reads them back.

Example:
    >>> import tempfile, numpy as np
    >>> from tracetorch.data.event_files import random_events, write_nmnist_bin
    >>> ev = random_events(np.random.default_rng(0), 5, (34, 34, 2), 300_000)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_nmnist_bin(f"{folder}/00001.bin", ev)
    ...     raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5)
    >>> bool((raw[:, 0] == ev["x"]).all()), int(raw.shape[0])
    (True, 5)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["EVENT_DTYPE", "random_events", "write_nmnist_bin", "write_nmnist", "write_shd", "write_dvs_gesture",
           "write_synthetic"]

EVENT_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])
"""Events as written: pixel (or channel) ``x``, ``y``, time ``t`` in microseconds, polarity ``p``."""


def random_events(rng: np.random.Generator, count: int, sensor_size: tuple[int, int, int], duration_us: int) -> np.ndarray:
    """``count`` events uniformly over the sensor ``(W, H, P)`` and ``[0, duration_us)``, sorted by time."""
    width, height, polarities = sensor_size
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["x"] = rng.integers(0, width, count)
    events["y"] = rng.integers(0, height, count)
    events["p"] = rng.integers(0, polarities, count)
    events["t"] = np.sort(rng.integers(0, duration_us, count))
    return events


def write_nmnist_bin(path: str | Path, events: np.ndarray) -> Path:
    """One N-MNIST ``.bin`` file: 5 bytes per event (x, y, p << 7 | t >> 16, t >> 8, t)."""
    t = events["t"].astype(np.int64)
    if len(t) and (t.min() < 0 or t.max() >= 1 << 23):
        raise ValueError("N-MNIST timestamps must be in [0, 2**23) microseconds")
    raw = np.zeros((len(events), 5), dtype=np.uint8)
    raw[:, 0] = events["x"]
    raw[:, 1] = events["y"]
    raw[:, 2] = (events["p"].astype(np.int64) << 7) | ((t >> 16) & 127)
    raw[:, 3] = (t >> 8) & 255
    raw[:, 4] = t & 255
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.tofile(path)
    return path


def write_nmnist(root: str | Path, samples: dict[str, list[tuple[np.ndarray, int]]]) -> Path:
    """``root/NMNIST/{Train,Test}/<label>/<id>.bin`` for ``{"train": [(events, label), ...], "test": [...]}``."""
    base = Path(root) / "NMNIST"
    for split, items in samples.items():
        folder = base / {"train": "Train", "test": "Test"}[split]
        for index, (events, label) in enumerate(items):
            write_nmnist_bin(folder / str(int(label)) / f"{index:05d}.bin", events)
    return base


def write_shd(root: str | Path, samples: dict[str, list[tuple[np.ndarray, int]]], dataset: str = "SHD") -> Path:
    """``root/SHD/shd_{train,test}.h5`` in the Heidelberg layout (times in seconds, units 0..699).

    ``dataset="SSC"`` writes the Spiking Speech Commands files (``root/SSC/ssc_{split}.h5``, same layout).
    """
    import h5py

    base = Path(root) / dataset
    base.mkdir(parents=True, exist_ok=True)
    for split, items in samples.items():
        with h5py.File(base / f"{dataset.lower()}_{split}.h5", "w") as file:
            times = file.create_dataset("spikes/times", (len(items),), dtype=h5py.vlen_dtype(np.float32))
            units = file.create_dataset("spikes/units", (len(items),), dtype=h5py.vlen_dtype(np.uint16))
            for index, (events, _) in enumerate(items):
                times[index] = (events["t"] / 1e6).astype(np.float32)
                units[index] = events["x"].astype(np.uint16)
            file["labels"] = np.array([label for _, label in items], dtype=np.uint16)
            file["extra/keys"] = np.array([f"digit-{i}".encode() for i in range(20)])
            file["extra/speaker"] = np.zeros(len(items), dtype=np.uint16)
    return base


def write_dvs_gesture(root: str | Path, samples: dict[str, list[tuple[np.ndarray, int]]]) -> Path:
    """``root/DVSGesture/ibmGesture{Train,Test}/user<NN>_fluorescent/<label>.npy`` (``[N, 4]`` x, y, p, t in ms).

    One user folder per sample, since a user folder holds one file per gesture label.
    """
    base = Path(root) / "DVSGesture"
    for split, items in samples.items():
        folder = base / {"train": "ibmGestureTrain", "test": "ibmGestureTest"}[split]
        for index, (events, label) in enumerate(items):
            user = folder / f"user{index + 1:02d}_fluorescent"
            user.mkdir(parents=True, exist_ok=True)
            array = np.stack([events["x"], events["y"], events["p"], events["t"] // 1000], axis=1).astype(np.int64)
            np.save(user / f"{int(label)}.npy", array, allow_pickle=False)
    return base


SYNTHETIC = {
    # name: (writer, sensor (W, H, P), classes, duration in microseconds)
    "nmnist": (write_nmnist, (34, 34, 2), 10, 300_000),
    "shd": (write_shd, (700, 1, 1), 20, 1_000_000),
    "dvs_gesture": (write_dvs_gesture, (128, 128, 2), 11, 6_000_000),
}


def write_synthetic(name: str, root: str | Path, num_train: int = 6, num_test: int = 3, events_per_sample: int = 400,
                    seed: int = 0) -> dict[str, list[tuple[np.ndarray, int]]]:
    """Random recordings for ``nmnist``, ``shd`` or ``dvs_gesture`` under ``root``; returns what was written.

    Labels cycle through the classes. DVS Gesture timestamps are whole milliseconds (as in its files).
    """
    if name not in SYNTHETIC:
        raise ValueError(f"no synthetic writer for {name!r} (known: {', '.join(SYNTHETIC)})")
    writer, sensor, classes, duration = SYNTHETIC[name]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[tuple[np.ndarray, int]]] = {}
    for split, count in (("train", num_train), ("test", num_test)):
        items = []
        for index in range(count):
            events = random_events(rng, events_per_sample, sensor, duration)
            if name == "dvs_gesture":
                events["t"] = events["t"] // 1000 * 1000
            items.append((events, index % classes))
        samples[split] = items
    writer(root, samples)
    return samples
