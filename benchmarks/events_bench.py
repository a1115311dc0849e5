"""Event datasets: loading throughput (cold, cached) and training throughput on binned N-MNIST-shaped input.

Part 1 writes synthetic recordings in each dataset's own format (:mod:`tracetorch.data.event_files`)
and loads them through tonic as ``tt-train`` does (:func:`tracetorch.data.events.load_events`):

* ``no cache``: read + transform + bin every recording, in memory (``cache: false``);
* ``cold``: the same, writing the cache (``.npy`` files) on the way;
* ``cached``: the second load, from the cache (memory-mapped), reading every frame once.

Throughput is recordings (train + test) per second. Part 2 trains an MLP (Flatten -> Linear
2312->256 -> LIB -> Linear 256->10 -> LI; Adam; batch 32) on binned N-MNIST-shaped frames
(2 x 34 x 34, 0/1) for several numbers of time bins T and reports which path the first
``Linear`` takes (:func:`tracetorch.kernels.event_linear.explain`, then whether the input was
0/1 and sparse enough) and the LIB layer (:func:`tracetorch.kernels.dispatch.explain`),
with the event-driven ``Linear`` on and off (off: ``event_linear.MIN_ELEMENTS`` raised so
that only this ``Linear`` goes dense). Needs ``pip install -e '.[events]'``.

    python benchmarks/events_bench.py [--samples 300] [--steps 20 100 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tracetorch.data.event_files import write_synthetic
from tracetorch.data.events import load_events

# name: (tonic class, events per recording, share of the --samples recordings)
LOADS = {"nmnist": ("NMNIST", 4000, 1.0), "shd": ("SHD", 5000, 1.0), "dvs_gesture": ("DVSGesture", 100_000, 0.1)}


def write(name: str, root: Path, samples: int, events: int) -> int:
    """Synthetic recordings in the dataset's own format (train: ``samples``, test: a quarter); how many were written."""
    written = write_synthetic(name, root, num_train=samples, num_test=max(1, samples // 4), events_per_sample=events)
    return sum(len(v) for v in written.values())


def loading(samples: int, bins: int) -> list[tuple[str, int, int, float, float, float]]:
    rows = []
    for name, (cls, events, share) in LOADS.items():
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            total = write(name, root, max(4, int(samples * share)), events)
            transforms = [{"Downsample": {"spatial_factor": 0.25}}] if name == "dvs_gesture" else []
            common = dict(root=str(root), download=False, n_time_bins=bins, transforms=transforms, name=name)
            load_events(cls, cache=False, train_subset=1, test_subset=1, **common)  # warm-up: imports, numba
            rates = []
            for cache in (False, True, True):
                start = time.perf_counter()
                splits = load_events(cls, cache=cache, **common)
                int(splits.train.x.sum()) + int(splits.test.x.sum())  # read every frame once
                rates.append(total / (time.perf_counter() - start))
            rows.append((name, total, events, *rates))
    return rows


def mlp():
    import tracetorch as tt

    torch.manual_seed(0)
    return tt.build_model({"input_shape": [2, 34, 34], "layers": [
        {"Flatten": {}}, {"Linear": {"out_features": 256}}, {"LIB": {"beta": 0.9}},
        {"Linear": {"out_features": 10}}, {"LI": {"beta": 0.9}}]})


def training(steps: list[int], samples: int, batch: int = 32, iters: int = 6) -> list[tuple]:
    from tracetorch.kernels import dispatch, event_linear

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        write("nmnist", Path(folder), max(batch, samples), 4000)
        for num_steps in steps:
            splits = load_events("NMNIST", folder, download=False, n_time_bins=num_steps, name="nmnist")
            x = splits.train.x[:batch].transpose(0, 1).float().contiguous()
            y = splits.train.y[:batch]
            density = float(x.mean())
            for label, limit in (("events", event_linear.MIN_ELEMENTS), ("dense", 1 << 62)):
                event_linear.MIN_ELEMENTS = limit
                model = mlp()
                fc, lib = model[1], model[2]
                folded = x.reshape(-1, 2 * 34 * 34)
                path, why = event_linear.explain(folded, fc.weight, fc.bias)
                rows_taken = 0
                if path == "events":
                    from tracetorch.kernels import cpu

                    indptr, _ = cpu.load().binary_rows(folded.contiguous(), event_linear.MAX_DENSITY)
                    rows_taken = int(indptr.numel() > 0)
                lib_path = dispatch.explain(lib, torch.zeros(num_steps, batch, 256))[0]
                optim = torch.optim.Adam(model.parameters(), lr=1e-3)
                times = []
                for _ in range(iters):
                    start = time.perf_counter()
                    model.zero_states()
                    out = model.run(x).mean(0)
                    loss = torch.nn.functional.cross_entropy(out, y)
                    optim.zero_grad()
                    loss.backward()
                    optim.step()
                    times.append(time.perf_counter() - start)
                rate = batch / float(np.median(times[2:]))
                taken = "events" if path == "events" and rows_taken else "dense: input not sparse 0/1" if path == "events" \
                    else "dense (event Linear off)" if label == "dense" else f"dense: {why}"
                rows.append((num_steps, density, label, taken, lib_path, rate))
            event_linear.MIN_ELEMENTS = 4096
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="training recordings per dataset (DVS Gesture: a tenth)")
    parser.add_argument("--bins", type=int, default=20, help="time bins for the loading part")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 100, 300], help="time bins for the training part")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"Loading (T={args.bins}; recordings per second, train + test)")
    print("| dataset | recordings | events each | no cache | cold (writes cache) | cached |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, total, events, plain, cold, cached in loading(args.samples, args.bins):
        print(f"| {name} | {total} | {events:,} | {plain:,.0f} | {cold:,.0f} | {cached:,.0f} |")

    print(f"\nTraining on binned N-MNIST-shaped frames (batch 32, {args.threads} thread(s); samples per second)")
    print("| T | input density | event Linear | first Linear took | LIB path | samples/s |")
    print("|---:|---:|---|---|---|---:|")
    for num_steps, density, label, taken, lib_path, rate in training(args.steps, args.samples):
        print(f"| {num_steps} | {density:.4f} | {label} | {taken} | {lib_path} | {rate:,.1f} |")


if __name__ == "__main__":
    main()
