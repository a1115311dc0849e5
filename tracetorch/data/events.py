"""Event datasets through tonic (``pip install 'tracetorch[events]'``): N-MNIST, SHD, DVS Gesture, any tonic dataset.

``data=nmnist``, ``data=shd``, ``data=dvs_gesture`` and ``data=tonic data.dataset=NAME``
read the recordings with tonic's dataset classes, apply tonic transforms (``Denoise``,
``Downsample``, ...; named in ``transforms``) and bin each recording with tonic's
``ToFrame`` into ``n_time_bins`` frames: equal slices of the recording, or slices of
``time_window`` microseconds cut or zero-padded to ``n_time_bins``. The result is a
sequence dataset (:class:`~tracetorch.data.Splits` with ``sequence=True``): samples
``[T, P, H, W]`` (``[T, W]`` for a one-channel 1-D sensor such as SHD's 700 cochlea
channels), fed to the model as ``[T, B, ...]`` without an encoder. ``binarize`` (default)
keeps a 1 where a bin holds any event: the input is then 0/1 spikes, which the
event-driven ``Linear`` uses (:mod:`tracetorch.kernels.event_linear`). tonic's ``ToFrame``
with ``n_time_bins`` slices ``[t0 + k w, t0 + (k + 1) w)`` with ``w = (t_last - t0) // T``
(floor division), so the events at ``t0 + T w`` and later (the last timestamp at least)
fall outside every bin; ``time_window`` slices from ``t0`` and keeps the incomplete last one.

Files: without network (``download: auto`` checks), put the extracted files where tonic
keeps them (:data:`LAYOUTS`, e.g. ``<root>/NMNIST/Train/<digit>/*.bin``); the archives
themselves are not needed. A missing or unreadable file is one error naming it.

Cache: the binned frames of each split are stored in ``cache_dir`` (default
``<root>/tracetorch_cache``) as ``<dataset>-<split>-<key>/{x.npy, y.npy, meta.json}``:
plain ``.npy`` arrays (read with ``allow_pickle=False``, memory-mapped) and a JSON record
of what they were built from. ``key`` hashes everything the frames depend on (dataset
options, transforms, binning, tonic's version and the size and modification time of
every source file), so changing any of them bins anew. The folder is safe to delete, even
during a run (the arrays are memory-mapped, so never overwrite its files in place).

Example:
    >>> from tracetorch.data.events import expected_layout
    >>> print(expected_layout("SHD", "data"))
    data/SHD/shd_train.h5 and data/SHD/shd_test.h5 (HDF5: spikes/times, spikes/units, labels)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from tracetorch.data.datasets import DatasetMissingError, register_dataset
from tracetorch.data.registry import call_with_checked_kwargs
from tracetorch.data.splits import Splits

__all__ = ["LAYOUTS", "EventFileError", "MissingExtraError", "expected_layout", "load_events", "tonic_dataset"]

CACHE_FORMAT = 1
EXTRA_HINT = "tonic is not installed: pip install 'tracetorch[events]' (or pip install tonic)"


class EventFileError(ValueError):
    """An event file that cannot be read or holds events outside the sensor."""


class MissingExtraError(ImportError, ValueError):
    """tonic is not installed (a ValueError too, so that tt-train reports it as one line)."""


@dataclass(frozen=True)
class Layout:
    """Where tonic finds an extracted dataset under ``<root>/<class name>/``: a folder of files or one file per split."""

    paths: dict[str, str]
    pattern: str | None
    description: str

    def files(self, base: Path, split: str) -> list[Path]:
        target = base / self.paths[split]
        if self.pattern is None:
            return [target] if target.is_file() else []
        return sorted(target.glob(self.pattern)) if target.is_dir() else []


LAYOUTS: dict[str, Layout] = {
    "NMNIST": Layout({"train": "Train", "test": "Test"}, "*/*.bin",
                     "{b}/Train/<digit>/<id>.bin and {b}/Test/<digit>/<id>.bin (N-MNIST's 5-byte events)"),
    "SHD": Layout({"train": "shd_train.h5", "test": "shd_test.h5"}, None,
                  "{b}/shd_train.h5 and {b}/shd_test.h5 (HDF5: spikes/times, spikes/units, labels)"),
    "SSC": Layout({"train": "ssc_train.h5", "test": "ssc_test.h5", "valid": "ssc_valid.h5"}, None,
                  "{b}/ssc_train.h5, {b}/ssc_test.h5 and {b}/ssc_valid.h5 (HDF5, as SHD)"),
    "DVSGesture": Layout({"train": "ibmGestureTrain", "test": "ibmGestureTest"}, "*/*.npy",
                         "{b}/ibmGestureTrain/user<NN>_<lighting>/<label>.npy and {b}/ibmGestureTest/... "
                         "(tonic's preprocessed release: [N, 4] x, y, p, t in ms)"),
}
"""The extracted files tonic reads, per tonic class (the downloaded archives are not needed)."""


def expected_layout(dataset: str, root: str | Path) -> str:
    """Where the files of tonic class ``dataset`` must be under ``root``, in words."""
    base = str(Path(root).expanduser() / dataset)
    layout = LAYOUTS.get(dataset)
    if layout is None:
        return f"{base}/ as tonic.datasets.{dataset} downloads and extracts it"
    return layout.description.format(b=base)


def _tonic() -> Any:
    try:
        import numpy.lib.recfunctions  # noqa: F401 - tonic's DVSGesture uses np.lib.recfunctions without importing it
        import tonic
    except ImportError:
        raise MissingExtraError(EXTRA_HINT) from None
    return tonic


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _open_split(cls: type, root: Path, split: str, split_kwargs: dict[str, Any], download: bool | str) -> Any:
    """tonic's dataset object for ``split`` (train or test); its extracted files suffice, downloads only when allowed."""
    layout = LAYOUTS.get(cls.__name__)
    name = cls.__name__

    def missing(reason: str) -> DatasetMissingError:
        return DatasetMissingError(f"{name} files not found under data.root={str(root)!r} ({reason}); expected "
                                   f"{expected_layout(name, root)}; put them there or set data.download=true with network")

    def check_exists(self: Any) -> bool:
        if layout is None:
            return cls._check_exists(self)
        return bool(layout.files(Path(self.location_on_system), split))

    def fetch(self: Any) -> None:
        if download is False or download == "false":
            raise missing("data.download is false")
        if download == "auto" and not _reachable(self.url):
            raise missing(f"no network to reach {urlparse(self.url).hostname}")
        try:
            cls.download(self)
        except Exception as err:  # noqa: BLE001 - urllib, tarfile, zipfile and md5 errors all mean the same here
            raise missing(f"download failed: {type(err).__name__}: {' '.join(str(err).split())[:200]}") from None

    local = type(name, (cls,), {"_check_exists": check_exists, "download": fetch})
    try:
        return _sorted_by_file(local(str(root), **split_kwargs))
    except DatasetMissingError:
        raise
    except TypeError as err:
        raise ValueError(f"tonic.datasets.{name}: {err} (set data.train_kwargs / data.test_kwargs)") from None
    except Exception as err:  # noqa: BLE001 - a corrupt HDF5 file or folder fails inside tonic's constructor
        raise EventFileError(f"{name}: cannot open the files under {root / name}: {type(err).__name__}: {err}") from None


def _sorted_by_file(ds: Any) -> Any:
    """Samples in file-name order (tonic lists some folders in the file system's order, which differs between machines)."""
    data = getattr(ds, "data", None)
    if not isinstance(data, list) or not data or not all(isinstance(d, str) for d in data):
        return ds
    order = sorted(range(len(data)), key=data.__getitem__)
    for attr, value in list(vars(ds).items()):
        if isinstance(value, list) and len(value) == len(data):
            setattr(ds, attr, [value[i] for i in order])
    return ds


def _source(ds: Any, index: int) -> str:
    """The file sample ``index`` comes from (for error messages)."""
    data = getattr(ds, "data", None)
    if isinstance(data, list) and index < len(data) and isinstance(data[index], str):
        return data[index]
    filename = getattr(ds, "data_filename", None)
    if filename:
        return f"{os.path.join(ds.location_on_system, filename)} (sample {index})"
    return f"{ds.location_on_system} (sample {index})"


def _read(ds: Any, index: int, sensor_size: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """Events and label of one sample, checked against the sensor; one :class:`EventFileError` naming the file."""
    where = _source(ds, index)
    if where.endswith(".bin") and os.path.getsize(where) % 5:
        raise EventFileError(f"corrupt N-MNIST file {where}: {os.path.getsize(where)} bytes is not a whole number of "
                             "5-byte events")
    try:
        events, label = ds[index]
    except Exception as err:  # noqa: BLE001 - numpy, h5py and tonic raise many types for a bad file
        raise EventFileError(f"cannot read {where}: {type(err).__name__}: {' '.join(str(err).split())[:300]}") from None
    names = events.dtype.names or ()
    for axis, size in zip(("x", "y", "p"), sensor_size):
        if axis in names and len(events) and size > 1:
            values = events[axis].astype(np.int64)
            if values.min() < 0 or values.max() >= size:
                raise EventFileError(f"corrupt event file {where}: {axis} in [{values.min()}, {values.max()}], outside the "
                                     f"sensor's {size}")
    if "t" in names and len(events) and not np.isfinite(events["t"].astype(np.float64)).all():
        raise EventFileError(f"corrupt event file {where}: non-finite timestamps")
    return events, int(label)


def _transforms(specs: list[Any], sensor: tuple[int, int, int]) -> tuple[list[Any], tuple[int, int, int]]:
    """tonic transforms from ``[{Name: {kwargs}}, ...]`` and the sensor size after them (``Downsample`` scales it)."""
    import tonic.transforms as tt_transforms

    made = []
    for spec in specs:
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ValueError(f"data.transforms: each entry is {{Name: {{options}}}}, got {spec!r}")
        (name, kwargs), = spec.items()
        cls = getattr(tt_transforms, str(name), None)
        if not isinstance(cls, type) or name in ("ToFrame", "Compose"):
            raise ValueError(f"data.transforms: {name!r} is not a tonic event transform (ToFrame is applied last by itself)")
        try:
            made.append(cls(**(kwargs or {})))
        except TypeError as err:
            raise ValueError(f"data.transforms: {name}: {err}") from None
        if name == "Downsample":
            factor = made[-1].get_params(made[-1].spatial_factor)
            if made[-1].target_size is not None:
                factor = tuple(np.asarray(made[-1].target_size) / np.asarray(sensor[:2]))
            sensor = (int((sensor[0] - 1) * factor[0]) + 1, int((sensor[1] - 1) * factor[1]) + 1, sensor[2])
    return made, sensor


@dataclass
class Binning:
    """How recordings become frames: ``n_time_bins`` frames, of ``time_window`` microseconds when given."""

    n_time_bins: int
    time_window: float | None
    binarize: bool
    sensor_size: tuple[int, int, int]

    def frame_shape(self) -> tuple[int, ...]:
        width, height, polarities = self.sensor_size
        if height == 1 and polarities == 1:
            return (self.n_time_bins, width)
        return (self.n_time_bins, polarities, height, width) if height > 1 else (self.n_time_bins, polarities, width)

    def __call__(self, events: np.ndarray, transforms: list[Any]) -> np.ndarray:
        from tonic.transforms import ToFrame

        for transform in transforms:
            events = transform(events)
        frames = np.zeros(self.frame_shape(), dtype=np.uint8 if self.binarize else np.int16)
        if len(events) == 0:
            return frames
        if (np.diff(events["t"]) < 0).any():  # ToFrame takes the first and last events as the recording's ends
            events = events[np.argsort(events["t"], kind="stable")]
        if self.time_window is None:
            binned = ToFrame(sensor_size=self.sensor_size, n_time_bins=self.n_time_bins)(events)
        else:
            binned = ToFrame(sensor_size=self.sensor_size, time_window=self.time_window, include_incomplete=True)(events)
        binned = binned[: self.n_time_bins].reshape(-1, *frames.shape[1:])
        frames[: len(binned)] = (binned > 0) if self.binarize else binned
        return frames


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _load_cached(folder: Path, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(x, y)`` when ``folder`` holds a complete entry for ``params``; None otherwise (warns if damaged)."""
    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("params") != params:
            raise ValueError("meta.json describes other parameters")
        x = np.load(folder / "x.npy", mmap_mode="c", allow_pickle=False)
        y = np.load(folder / "y.npy", allow_pickle=False)
        if list(x.shape) != meta["x_shape"] or str(x.dtype) != meta["x_dtype"] or y.shape != (x.shape[0],):
            raise ValueError(f"arrays {x.shape} {x.dtype} / {y.shape} do not match meta.json")
        if x.dtype not in (np.uint8, np.int16) or y.dtype != np.int64:
            raise ValueError(f"unexpected dtypes {x.dtype} / {y.dtype}")
    except Exception as err:  # noqa: BLE001 - any damage means: bin again
        warnings.warn(f"event cache {folder} is unusable ({type(err).__name__}: {err}); binning again", stacklevel=3)
        return None
    return x, y


def _bin_split(ds: Any, indices: np.ndarray, binning: Binning, transforms: list[Any], sensor: tuple[int, int, int],
               out: np.ndarray) -> np.ndarray:
    labels = np.zeros(len(indices), dtype=np.int64)
    for row, index in enumerate(indices):
        events, labels[row] = _read(ds, int(index), sensor)
        out[row] = binning(events, transforms)
    return labels


def _cached_split(folder: Path | None, params: dict[str, Any], ds: Any, indices: np.ndarray, binning: Binning,
                  transforms: list[Any], sensor: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    dtype = np.uint8 if binning.binarize else np.int16
    shape = (len(indices), *binning.frame_shape())
    cached = None if folder is None else _load_cached(folder, params)
    if cached is not None:
        return cached
    if folder is not None:
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
        except OSError as err:
            warnings.warn(f"cannot write the event cache in {folder.parent} ({err}); binning in memory", stacklevel=3)
            folder = None
    if folder is None:
        x = np.zeros(shape, dtype=dtype)
        return x, _bin_split(ds, indices, binning, transforms, sensor, x)
    try:
        x = np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=dtype, shape=shape)
        y = _bin_split(ds, indices, binning, transforms, sensor, x)
        x.flush()
        del x
        np.save(tmp / "y.npy", y, allow_pickle=False)
        meta = {"params": params, "x_shape": list(shape), "x_dtype": np.dtype(dtype).name}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    loaded = _load_cached(folder, params)
    if loaded is None:
        raise OSError(f"event cache {folder} could not be read back after writing it")
    return loaded


def _subset(length: int, limit: int | None, what: str) -> np.ndarray:
    """All indices, or ``limit`` evenly spaced ones (every class, not the first folders only)."""
    if limit is None or limit >= length:
        return np.arange(length)
    if limit < 1:
        raise ValueError(f"{what} must be >= 1 or null, got {limit}")
    return np.unique(np.linspace(0, length - 1, limit).round().astype(np.int64))


def load_events(
    dataset: str,
    root: str = "data",
    download: bool | str = "auto",
    n_time_bins: int = 20,
    time_window: float | None = None,
    binarize: bool = True,
    transforms: list[Any] | None = None,
    sensor_size: list[int] | None = None,
    num_classes: int | None = None,
    train_kwargs: dict[str, Any] | None = None,
    test_kwargs: dict[str, Any] | None = None,
    dataset_kwargs: dict[str, Any] | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    cache: bool = True,
    cache_dir: str | None = None,
    name: str | None = None,
) -> Splits:
    """A tonic dataset (class name ``dataset``, e.g. ``"NMNIST"``) binned into a sequence :class:`Splits`.

    ``train_kwargs`` / ``test_kwargs`` select the split in tonic's constructor (default
    ``{"train": true}`` / ``{"train": false}``); ``dataset_kwargs`` go to both.
    """
    tonic = _tonic()
    cls = getattr(tonic.datasets, str(dataset), None)
    if not isinstance(cls, type):
        known = sorted(n for n in dir(tonic.datasets) if isinstance(getattr(tonic.datasets, n), type))
        raise ValueError(f"data.dataset: tonic has no dataset {dataset!r} (known: {', '.join(known)})")
    if download not in (True, False, "auto", "true", "false"):
        raise ValueError(f"data.download must be true, false or auto, got {download!r}")
    if isinstance(n_time_bins, bool) or not isinstance(n_time_bins, int) or n_time_bins < 1:
        raise ValueError(f"data.n_time_bins must be a positive int, got {n_time_bins!r}")
    if time_window is not None and not time_window > 0:
        raise ValueError(f"data.time_window must be > 0 microseconds or null, got {time_window!r}")
    native = tuple(int(s) for s in (sensor_size or getattr(cls, "sensor_size", ()) or ()))
    if len(native) != 3:
        raise ValueError(f"tonic.datasets.{dataset} has no sensor_size; set data.sensor_size=[W, H, P]")
    made, frame_sensor = _transforms(list(transforms or []), native)  # type: ignore[arg-type]
    binning = Binning(n_time_bins, time_window, bool(binarize), frame_sensor)
    root_path = Path(root).expanduser()
    split_kwargs = {"train": {"train": True} if train_kwargs is None else dict(train_kwargs),
                    "test": {"train": False} if test_kwargs is None else dict(test_kwargs)}
    label = name or str(dataset).lower()
    cache_root = Path(cache_dir).expanduser() if cache_dir else root_path / "tracetorch_cache"
    parts = []
    for split, limit in (("train", train_subset), ("test", test_subset)):
        ds = _open_split(cls, root_path, split, {**(dataset_kwargs or {}), **split_kwargs[split]}, download)
        if len(ds) == 0:
            raise DatasetMissingError(f"{dataset}: no {split} samples under {root_path / dataset}; expected "
                                      f"{expected_layout(str(dataset), root_path)}")
        indices = _subset(len(ds), limit, f"data.{split}_subset")
        layout = LAYOUTS.get(str(dataset))
        sources = layout.files(Path(ds.location_on_system), split) if layout else [Path(ds.location_on_system)]
        params = {"format": CACHE_FORMAT, "dataset": str(dataset), "split": split,
                  "kwargs": {**(dataset_kwargs or {}), **split_kwargs[split]}, "transforms": transforms or [],
                  "n_time_bins": n_time_bins, "time_window": time_window, "binarize": bool(binarize),
                  "sensor_size": list(native), "indices": _digest(indices), "tonic": tonic.__version__,
                  "files": _fingerprint(sources), "num_files": len(sources)}
        folder = cache_root / f"{label}-{split}-{_digest(params)[:16]}" if cache else None
        x, y = _cached_split(folder, params, ds, indices, binning, made, native)
        parts.append((torch.from_numpy(x), torch.from_numpy(y)))
    classes = num_classes or len(getattr(cls, "classes", []) or []) or None
    for split, (_, y) in zip(("train", "test"), parts):
        if len(y) and (int(y.min()) < 0 or (classes is not None and int(y.max()) >= classes)):
            raise EventFileError(f"{dataset}: {split} labels span [{int(y.min())}, {int(y.max())}], outside the "
                                 f"{classes} classes (files under {root_path / str(dataset)}; data.num_classes sets the count)")
    splits = Splits.from_tensors(parts[0], parts[1], num_classes=classes, sequence=True, name=label)
    splits.info.update({"sensor_size": list(frame_sensor), "n_time_bins": n_time_bins, "time_window": time_window,
                        "cache_dir": str(cache_root) if cache else None})
    return splits


def _digest(value: Any) -> str:
    data = value.tobytes() if isinstance(value, np.ndarray) else json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()


def _named(dataset: str, label: str, classes: int, options: dict[str, Any]) -> Splits:
    load = functools.partial(load_events, dataset, name=label, num_classes=classes)
    return call_with_checked_kwargs(load, options, f"dataset {label!r}")


@register_dataset("tonic")
def tonic_dataset(dataset: str | None = None, **options: Any) -> Splits:
    """``data=tonic data.dataset=NAME``: any tonic dataset class (options as :func:`load_events`)."""
    if not dataset or dataset == "???":
        raise ValueError("data=tonic needs data.dataset=NAME, a class of tonic.datasets (e.g. NMNIST, POKERDVS)")
    return call_with_checked_kwargs(functools.partial(load_events, dataset), options, f"tonic dataset {dataset!r}")


@register_dataset("nmnist")
def nmnist(**options: Any) -> Splits:
    """N-MNIST (2 x 34 x 34 event camera, 10 digits) from ``root/NMNIST``; options as :func:`load_events`."""
    return _named("NMNIST", "nmnist", 10, options)


@register_dataset("shd")
def shd(**options: Any) -> Splits:
    """Spiking Heidelberg Digits (700 channels, 20 spoken digits) from ``root/SHD``; samples ``[T, 700]``."""
    return _named("SHD", "shd", 20, options)


@register_dataset("dvs_gesture")
def dvs_gesture(**options: Any) -> Splits:
    """IBM DVS Gesture (2 x 128 x 128 event camera, 11 gestures) from ``root/DVSGesture``."""
    return _named("DVSGesture", "dvs_gesture", 11, options)
