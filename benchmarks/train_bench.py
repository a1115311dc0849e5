"""Rate-coded MNIST training throughput (784-128-128-10 LIF, T=20, batch 100) per library.

Every library trains the same network (three Linear layers, each followed by a LIF with
subtractive reset, loss = cross-entropy of the mean output spikes, Adam) on Poisson-coded
images: traceTorch in step mode and in sequence mode (``model.run``), snnTorch and
SpikingJelly (multi-step) when installed (``pip install -e .[bench]``). Real MNIST is used
when ``../shared/data/MNIST`` exists beside the repository, random images otherwise.
Throughput is training samples per second (encoding, forward, backward, step), measured
in the same run; ratios are against the fastest other library.

    python benchmarks/train_bench.py [--batches 20] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch
from torch import nn

STEPS, BATCH, SIZES = 20, 100, (784, 128, 128, 10)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_images(count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if (DATA / "MNIST" / "raw").is_dir():
        from torchvision.datasets import MNIST

        data = MNIST(str(DATA), train=True, download=False)
        perm = torch.randperm(len(data.data))[:count]
        return data.data[perm].reshape(-1, 784).float() / 255, data.targets[perm], "MNIST"
    return torch.rand(count, 784), torch.randint(0, 10, (count,)), "random images"


def linears() -> list[nn.Linear]:
    torch.manual_seed(0)
    return [nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])]


def tracetorch_model(sequence: bool):
    import tracetorch as tt

    fc = linears()
    net = tt.Sequential(fc[0], tt.snn.LIB(128, beta=0.9), fc[1], tt.snn.LIB(128, beta=0.9), fc[2], tt.snn.LIB(10, beta=0.9))

    def forward(x_seq: torch.Tensor) -> torch.Tensor:
        net.zero_states()
        if sequence:
            return net.run(x_seq)
        return torch.stack([net(x_t) for x_t in x_seq])
    return net, forward


def snntorch_model():
    import snntorch as snn

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
    return net, forward


def spikingjelly_model():
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

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
    return net, forward


MODELS = {
    "tracetorch-step": lambda: tracetorch_model(False),
    "tracetorch-seq": lambda: tracetorch_model(True),
    "snntorch": snntorch_model,
    "spikingjelly": spikingjelly_model,
}


def throughput(name: str, images: torch.Tensor, labels: torch.Tensor, batches: int) -> tuple[float, float]:
    net, forward = MODELS[name]()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    losses = []

    def train_batch(i: int) -> None:
        x = images[(i * BATCH) % len(images):][:BATCH]
        y = labels[(i * BATCH) % len(images):][:BATCH]
        x_seq = torch.bernoulli(x.expand(STEPS, *x.shape))
        loss = loss_fn(forward(x_seq).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())

    for i in range(2):
        train_batch(i)
    start = time.perf_counter()
    for i in range(batches):
        train_batch(i + 2)
    elapsed = time.perf_counter() - start
    return batches * BATCH / elapsed, losses[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels, source = load_images((args.batches + 2) * BATCH)
    names = [n for n in MODELS if n.split("-")[0] not in ("snntorch", "spikingjelly") or importlib.util.find_spec(n)]
    print(f"{source}, {'-'.join(map(str, SIZES))}, T={STEPS}, batch {BATCH}, {torch.get_num_threads()} threads")
    results = {name: throughput(name, images, labels, args.batches) for name in names}
    others = [r[0] for n, r in results.items() if not n.startswith("tracetorch")]
    best = max(others, default=None)
    print(f"{'library':>16} {'samples/s':>10} {'ratio':>7} {'last loss':>10}")
    for name, (rate, loss) in results.items():
        ratio = f"{rate / best:.2f}x" if best else "-"
        print(f"{name:>16} {rate:10.0f} {ratio:>7} {loss:10.3f}")
    print("ratio: this throughput / the fastest other library's")


if __name__ == "__main__":
    main()
