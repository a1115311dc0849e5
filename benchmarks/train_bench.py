"""Rate-coded MNIST training: throughput, test accuracy and peak memory per library (784-128-128-10, T=20).

Every library trains the same network (three Linear layers with the same initial weights,
each followed by a LIF with beta 0.9, threshold 1, binary spikes and subtractive reset;
loss = cross-entropy of the mean output spikes; Adam, lr 1e-3; batch 100) on the same
shuffled batches, rate-coding each batch with its own encoder: traceTorch in step mode and
in sequence mode (``model.run``; ``tracetorch.data.encoders.rate``), snnTorch
(``spikegen.rate``) and SpikingJelly (multi-step, ``encoding.PoissonEncoder``) when
installed (``pip install -e .[bench]``).

Each library runs in a fresh subprocess. Throughput is training samples per second over
``--epochs`` epochs (encoding, forward, backward, optimizer step; two warm-up batches
excluded). The test accuracy after those epochs (10,000 test images, argmax of the mean
output spikes) shows that the speed is not bought with accuracy. Peak memory is the growth
of the process's resident set during training. Real MNIST is used when
``../shared/data/MNIST`` exists beside the repository (the 5,000-image train subset and the
official test set), random images otherwise (no accuracy then). Ratios are against the
fastest / leanest other library in the same run.

    python benchmarks/train_bench.py [--epochs 3] [--threads N] [--libraries tracetorch-seq spikingjelly]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

STEPS, BATCH, SIZES = 20, 100, (784, 128, 128, 10)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, str]:
    """(train images, train labels, test images, test labels, source); images flat in [0, 1]."""
    if (DATA / "MNIST" / "raw").is_dir():
        from torchvision.datasets import MNIST

        train, test = (MNIST(str(DATA), train=split, download=False) for split in (True, False))
        flat = [d.data.reshape(-1, 784).float() / 255 for d in (train, test)]
        return flat[0], train.targets, flat[1], test.targets, "MNIST"
    generator = torch.Generator().manual_seed(0)
    return torch.rand(5000, 784, generator=generator), torch.randint(0, 10, (5000,), generator=generator), None, None, \
        "random images"


def linears() -> list[nn.Linear]:
    torch.manual_seed(0)
    return [nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])]


def tracetorch_model(sequence: bool):
    import tracetorch as tt
    from tracetorch.data.encoders import rate

    fc = linears()
    lifs = [tt.snn.LIB(n, beta=0.9, quant_fn=tt.functional.round_ste()) for n in SIZES[1:]]  # binary spikes
    net = tt.Sequential(fc[0], lifs[0], fc[1], lifs[1], fc[2], lifs[2])

    def forward(x_seq: torch.Tensor) -> torch.Tensor:
        net.zero_states()
        if sequence:
            return net.run(x_seq)
        return torch.stack([net(x_t) for x_t in x_seq])

    def encode(x: torch.Tensor) -> torch.Tensor:
        return rate(x, STEPS)
    return net, forward, encode


def snntorch_model():
    import snntorch as snn
    from snntorch import spikegen

    fc = linears()
    lifs = [snn.Leaky(beta=0.9) for _ in fc]
    net = nn.ModuleList([*fc, *lifs])

    def forward(x_seq: torch.Tensor) -> torch.Tensor:
        mems = [lif.init_leaky() for lif in lifs]
        outs = []
        for x_t in x_seq:
            h = x_t
            for i, (linear, lif) in enumerate(zip(fc, lifs)):
                h, mems[i] = lif(linear(h), mems[i])
            outs.append(h)
        return torch.stack(outs)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return spikegen.rate(x, num_steps=STEPS)
    return net, forward, encode


def spikingjelly_model():
    from spikingjelly.activation_based import encoding, functional, layer, neuron, surrogate

    fc = linears()
    mods = []
    for linear in fc:
        mods += [layer.SeqToANNContainer(linear),
                 neuron.LIFNode(tau=10.0, decay_input=False, v_reset=None, surrogate_function=surrogate.Sigmoid(),
                                step_mode="m")]
    net = nn.Sequential(*mods)

    def forward(x_seq: torch.Tensor) -> torch.Tensor:
        functional.reset_net(net)
        return net(x_seq)

    poisson = encoding.PoissonEncoder()

    def encode(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([poisson(x) for _ in range(STEPS)])
    return net, forward, encode


MODELS = {
    "tracetorch-step": lambda: tracetorch_model(False),
    "tracetorch-seq": lambda: tracetorch_model(True),
    "snntorch": snntorch_model,
    "spikingjelly": spikingjelly_model,
}


def train_and_test(name: str, data: tuple, epochs: int) -> dict:
    """Training samples/s, test accuracy (None without MNIST) and peak memory of library ``name``."""
    images, labels, test_images, test_labels, _ = data
    torch.manual_seed(0)
    net, forward, encode = MODELS[name]()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.cat([torch.randperm(len(images), generator=torch.Generator().manual_seed(e)) for e in range(epochs)])
    batches = order[: len(order) // BATCH * BATCH].view(-1, BATCH)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = 0.0
    for i, index in enumerate(batches):
        if i == 2:
            start = time.perf_counter()
        loss = loss_fn(forward(encode(images[index])).mean(0), labels[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
    rate = (len(batches) - 2) * BATCH / (time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    accuracy = None
    if test_images is not None:
        correct = 0
        with torch.no_grad():
            for x, y in zip(test_images.split(1000), test_labels.split(1000)):
                correct += int((forward(encode(x)).mean(0).argmax(1) == y).sum())
        accuracy = correct / len(test_labels)
    return {"rate": rate, "accuracy": accuracy, "peak_mb": peak_mb}


def measure(name: str, epochs: int, threads: int | None) -> dict | None:
    """``train_and_test`` in a fresh subprocess, so that its peak memory is its own."""
    cmd = [sys.executable, __file__, "--child", name, "--epochs", str(epochs)]
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {name} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--libraries", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--child", choices=list(MODELS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_images()
    if args.child:
        print(json.dumps(train_and_test(args.child, data, args.epochs)))
        return
    names = [n for n in args.libraries
             if n.split("-")[0] not in ("snntorch", "spikingjelly") or importlib.util.find_spec(n)]
    print(f"{data[-1]}, {'-'.join(map(str, SIZES))}, T={STEPS}, batch {BATCH}, {args.epochs} epochs of "
          f"{len(data[0])} images, {torch.get_num_threads()} threads")
    results = {name: r for name in names if (r := measure(name, args.epochs, args.threads)) is not None}
    others = [r for n, r in results.items() if not n.startswith("tracetorch")]
    best = max((r["rate"] for r in others), default=None)
    leanest = min((r["peak_mb"] for r in others), default=None)
    print(f"{'library':>16} {'samples/s':>10} {'ratio':>7} {'test acc':>9} {'peak MB':>8} {'mem ratio':>10}")
    for name, r in results.items():
        ratio = f"{r['rate'] / best:.2f}x" if best else "-"
        shown = f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-"
        mem = f"{r['peak_mb'] / leanest:.2f}" if leanest else "-"
        print(f"{name:>16} {r['rate']:10.0f} {ratio:>7} {shown:>9} {r['peak_mb']:8.0f} {mem:>10}")
    print("ratio: this throughput / the fastest other library's (each library rate-codes with its own encoder); "
          "peak MB: resident-set growth during training; mem ratio: this peak / the leanest other library's")


if __name__ == "__main__":
    main()
