"""Rate-coded MNIST training: throughput, test accuracy and peak memory per library (an MLP or a conv SNN).

``--model mlp`` (default): 784-128-128-10, three Linear layers, T=20, batch 100, 3 epochs.
``--model conv``: Conv2d(1, 12, 5) - LIF - MaxPool2d(2) - Conv2d(12, 64, 5) - LIF - MaxPool2d(2) -
Flatten - Linear(1024, 10) - LIF on the 28x28 images, T=10, batch 64, 1 epoch.
Every library trains the same network (the same torch layers with the same initial weights,
each followed by a LIF with beta 0.9, threshold 1, binary spikes and subtractive reset, its
parameters fixed (snnTorch's and SpikingJelly's defaults; traceTorch's are learned unless told not to);
loss = cross-entropy of the mean output spikes over time; Adam, lr 1e-3) on the same shuffled
batches: traceTorch in step mode and in sequence mode (``model.run``), snnTorch (a step loop
over ``snn.Leaky``) and SpikingJelly (multi-step ``LIFNode`` in ``SeqToANNContainer`` layers)
when installed (``pip install -e .[bench]``).

The images are rate-coded in one of three ways (``--encoding``):

- ``own``: each library's own encoder inside the timed loop (``tracetorch.data.encoders.rate``,
  snnTorch's ``spikegen.rate``, SpikingJelly's ``encoding.PoissonEncoder``);
- ``shared``: one Bernoulli encoder for every library, drawn by the harness inside the timed
  loop (``torch.rand(T, *x.shape, generator=g) < x``, ``g`` seeded the same for every library);
- ``pre``: the same shared encoder, but every training batch's spikes are drawn before the
  clock starts, so that the throughput is the network's alone (forward, backward, optimizer
  step); the test spikes are drawn per batch at test time, outside the timing.

``all`` (the MLP's default) runs the three one after the other and prints a table for each;
the conv SNN defaults to ``pre``. With ``shared`` and ``pre`` every library sees the same spikes.

Each library runs in a fresh subprocess, the libraries round-robin ``--rounds`` times (default 3),
so that a slow spell of the machine falls on every library alike; the tables give each library's
median, its range, and the range of its ratio round by round. Throughput is training samples per
second over ``--epochs`` epochs (two warm-up batches excluded). The test accuracy after those epochs
(argmax of the mean output spikes over the 10,000 test images) shows that the speed is not
bought with accuracy. Peak memory is the growth of the process's resident set during
training (after any pre-drawn spikes). Real MNIST is used when ``../shared/data/MNIST`` exists
beside the repository (the 5,000-image train subset and the official test set), random images
otherwise (no accuracy then). Ratios are against the fastest / leanest other library in the
same run.

    python benchmarks/train_bench.py                   # MLP, the three encodings, 3 epochs
    python benchmarks/train_bench.py --encoding pre    # MLP, network only
    python benchmarks/train_bench.py --model conv      # conv SNN, spikes drawn before the clock, 1 epoch
    python benchmarks/train_bench.py [--epochs 3] [--steps 20] [--threads N] [--libraries tracetorch-seq spikingjelly]
    python benchmarks/train_bench.py --limit 500 --epochs 1 --rounds 1   # a quick check on 500 train / 500 test images
    python benchmarks/train_bench.py --model conv --libraries tracetorch-seq --profile 5   # where the time goes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from layer_bench import machine
from torch import nn

SIZES = (784, 128, 128, 10)
STEPS = {"mlp": 20, "conv": 10}
BATCH = {"mlp": 100, "conv": 64}
EPOCHS = {"mlp": 3, "conv": 1}
DEFAULT_ENCODING = {"mlp": "all", "conv": "pre"}
ENCODINGS = {
    "own": "each library's own encoder, inside the timed loop",
    "shared": "one shared Bernoulli encoder drawn by the harness inside the timed loop, the same spikes for every library",
    "pre": "the shared encoder's spikes drawn before the clock, network only; the same spikes for every library",
}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# (torch layer, LIF neurons, the LIF's neuron dim, modules after the LIF) per stage
Stage = tuple[nn.Module, int, int, list[nn.Module]]
Encoder = Callable[[torch.Tensor], torch.Tensor]


def load_images(limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, str]:
    """(train images, train labels, test images, test labels, source); images flat in [0, 1]; the first ``limit`` of each."""
    if (DATA / "MNIST" / "raw").is_dir():
        from torchvision.datasets import MNIST

        train, test = (MNIST(str(DATA), train=split, download=False) for split in (True, False))
        flat = [d.data[:limit].reshape(-1, 784).float() / 255 for d in (train, test)]
        return flat[0], train.targets[:limit], flat[1], test.targets[:limit], "MNIST"
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(5000, 784, generator=generator), torch.randint(0, 10, (5000,), generator=generator)
    return images[:limit], labels[:limit], None, None, "random images"


def stages(model: str) -> list[Stage]:
    """The network's stages, built after ``torch.manual_seed(0)``: the same initial weights for every library."""
    torch.manual_seed(0)
    if model == "mlp":
        return [(nn.Linear(a, b), b, -1, []) for a, b in zip(SIZES[:-1], SIZES[1:])]
    return [(nn.Conv2d(1, 12, 5), 12, -3, [nn.MaxPool2d(2)]),
            (nn.Conv2d(12, 64, 5), 64, -3, [nn.MaxPool2d(2), nn.Flatten()]),
            (nn.Linear(64 * 4 * 4, 10), 10, -1, [])]


def shared_encoder(steps: int, seed: int) -> Encoder:
    """The harness's Bernoulli rate encoder: ``[B, ...] in [0, 1] -> spikes [T, B, ...]``, from a generator seeded ``seed``."""
    generator = torch.Generator().manual_seed(seed)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return (torch.rand(steps, *x.shape, generator=generator) < x).float()
    return encode


def tracetorch_model(model: str, steps: int, sequence: bool) -> tuple[nn.Module, Encoder, Encoder]:
    import tracetorch as tt
    from tracetorch.data.encoders import rate

    mods: list[nn.Module] = []
    for layer, n, dim, after in stages(model):
        lif = tt.snn.LIB(n, beta=0.9, dim=dim, quant_fn=tt.functional.round_ste(),  # binary spikes
                         learn_beta=False, learn_threshold=False, learn_bias=False)  # fixed, as in the other libraries
        mods += [layer, lif, *after]
    net = tt.Sequential(*mods)

    def forward(x_seq: torch.Tensor) -> torch.Tensor:
        net.zero_states()
        if sequence:
            return net.run(x_seq)
        return torch.stack([net(x_t) for x_t in x_seq])

    def encode(x: torch.Tensor) -> torch.Tensor:
        return rate(x, steps)
    return net, forward, encode


def snntorch_model(model: str, steps: int) -> tuple[nn.Module, Encoder, Encoder]:
    import snntorch as snn
    from snntorch import spikegen

    net_stages = stages(model)
    lifs = [snn.Leaky(beta=0.9) for _ in net_stages]
    net = nn.ModuleList([m for (layer, _, _, after), lif in zip(net_stages, lifs) for m in (layer, lif, *after)])

    def forward(x_seq: torch.Tensor) -> torch.Tensor:
        mems = [lif.init_leaky() for lif in lifs]
        outs = []
        for x_t in x_seq:
            h = x_t
            for i, ((layer, _, _, after), lif) in enumerate(zip(net_stages, lifs)):
                h, mems[i] = lif(layer(h), mems[i])
                for module in after:
                    h = module(h)
            outs.append(h)
        return torch.stack(outs)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return spikegen.rate(x, num_steps=steps)
    return net, forward, encode


def spikingjelly_model(model: str, steps: int) -> tuple[nn.Module, Encoder, Encoder]:
    from spikingjelly.activation_based import encoding, functional, layer, neuron, surrogate

    mods: list[nn.Module] = []
    for torch_layer, _, _, after in stages(model):
        mods += [layer.SeqToANNContainer(torch_layer),
                 neuron.LIFNode(tau=10.0, decay_input=False, v_reset=None, surrogate_function=surrogate.Sigmoid(),
                                step_mode="m")]
        mods += [layer.SeqToANNContainer(*after)] if after else []
    net = nn.Sequential(*mods)

    def forward(x_seq: torch.Tensor) -> torch.Tensor:
        functional.reset_net(net)
        return net(x_seq)

    poisson = encoding.PoissonEncoder()

    def encode(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([poisson(x) for _ in range(steps)])
    return net, forward, encode


MODELS = {
    "tracetorch-step": lambda model, steps: tracetorch_model(model, steps, False),
    "tracetorch-seq": lambda model, steps: tracetorch_model(model, steps, True),
    "snntorch": snntorch_model,
    "spikingjelly": spikingjelly_model,
}


def train_and_test(name: str, data: tuple, model: str, encoding: str, epochs: int, steps: int, profile: int = 0) -> dict:
    """Training samples/s, test accuracy (None without MNIST) and peak memory of library ``name``.

    With ``profile`` > 0: after two warm-up batches, ``torch.profiler``'s table of the next ``profile`` batches
    (to stderr) instead.
    """
    images, labels, test_images, test_labels, _ = data
    if model == "conv":
        images = images.view(-1, 1, 28, 28)
        test_images = None if test_images is None else test_images.view(-1, 1, 28, 28)
    batch = BATCH[model]
    torch.manual_seed(0)
    net, forward, own_encode = MODELS[name](model, steps)
    encode, test_encode = (own_encode, own_encode) if encoding == "own" else \
        (shared_encoder(steps, seed=0), shared_encoder(steps, seed=1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.cat([torch.randperm(len(images), generator=torch.Generator().manual_seed(e)) for e in range(epochs)])
    batches = order[: len(order) // batch * batch].view(-1, batch)
    if len(batches) < 3:
        raise SystemExit(f"{len(batches)} batches: need at least 3 (two warm-up batches are not timed)")
    inputs = [encode(images[index]) for index in batches] if encoding == "pre" else None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = 0.0

    def train(i: int, index: torch.Tensor) -> None:
        x_seq = inputs[i] if inputs is not None else encode(images[index])
        loss = loss_fn(forward(x_seq).mean(0), labels[index])
        opt.zero_grad()
        loss.backward()
        opt.step()

    if profile:
        from torch.profiler import profile as torch_profile

        for i, index in enumerate(batches[:2]):
            train(i, index)
        with torch_profile() as prof:
            for i, index in enumerate(batches[2:2 + profile], start=2):
                train(i, index)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)
        return {}
    for i, index in enumerate(batches):
        if i == 2:
            start = time.perf_counter()
        train(i, index)
    rate = (len(batches) - 2) * batch / (time.perf_counter() - start)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    accuracy = None
    if test_images is not None:
        correct = 0
        with torch.no_grad():
            for x, y in zip(test_images.split(1000), test_labels.split(1000)):
                correct += int((forward(test_encode(x)).mean(0).argmax(1) == y).sum())
        accuracy = correct / len(test_labels)
    return {"rate": rate, "accuracy": accuracy, "peak_mb": peak_mb}


def measure(name: str, options: list[str]) -> dict | None:
    """``train_and_test`` in a fresh subprocess, so that its peak memory is its own."""
    proc = subprocess.run([sys.executable, __file__, "--child", name, *options], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {name} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def combine(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Each library's median over the rounds (rate, peak memory, accuracy), with its lowest and highest rate and,
    round by round, its rate over the fastest other library's in the same round."""
    combined = {}
    for name in dict.fromkeys(name for r in rounds for name in r):
        runs = [r[name] for r in rounds if name in r]
        rates = [run["rate"] for run in runs]
        accuracies = [run["accuracy"] for run in runs if run["accuracy"] is not None]
        per_round = [r[name]["rate"] / best for r in rounds if name in r
                     if (best := max((v["rate"] for n, v in r.items() if not n.startswith("tracetorch")), default=0))]
        combined[name] = {"rate": statistics.median(rates), "low": min(rates), "high": max(rates),
                          "peak_mb": statistics.median(run["peak_mb"] for run in runs),
                          "accuracy": statistics.median(accuracies) if accuracies else None,
                          "round_ratios": per_round}
    return combined


def print_table(title: str, results: dict[str, dict], encoding: str) -> None:
    """One table: median throughput and peak memory with their ratios against the best other (non-traceTorch)
    library, the throughput's range over the rounds and the ratio's range round by round."""
    others = [r for n, r in results.items() if not n.startswith("tracetorch")]
    best = max((r["rate"] for r in others), default=None)
    leanest = min((r["peak_mb"] for r in others), default=None)
    print(title)
    print(f"{'library':>16} {'samples/s':>10} {'range':>13} {'ratio':>7} {'per round':>13} {'test acc':>9} "
          f"{'peak MB':>8} {'mem ratio':>10}")
    for name, r in results.items():
        ratio = f"{r['rate'] / best:.2f}x" if best else "-"
        spread = f"{r['low']:.0f}-{r['high']:.0f}"
        rounds = f"{min(r['round_ratios']):.2f}-{max(r['round_ratios']):.2f}x" if r["round_ratios"] else "-"
        shown = f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-"
        mem = f"{r['peak_mb'] / leanest:.2f}" if leanest else "-"
        print(f"{name:>16} {r['rate']:10.0f} {spread:>13} {ratio:>7} {rounds:>13} {shown:>9} {r['peak_mb']:8.0f} "
              f"{mem:>10}")
    print(f"samples/s: the median over the rounds, range: lowest-highest; ratio: this median / the fastest other "
          f"library's ({ENCODINGS[encoding]}); per round: the lowest and highest of this rate / the fastest other's "
          "in the same round; peak MB: resident-set growth during training (median); mem ratio: this peak / the "
          "leanest other library's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(STEPS), default="mlp")
    parser.add_argument("--encoding", choices=[*ENCODINGS, "all"],
                        help="how the images are rate-coded (default: all for the MLP, pre for the conv SNN)")
    parser.add_argument("--epochs", type=int, help="default: 3 for the MLP, 1 for the conv SNN")
    parser.add_argument("--steps", type=int, help="time steps T (default: 20 for the MLP, 10 for the conv SNN)")
    parser.add_argument("--limit", type=int, help="use only the first N training and the first N test images")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="run the libraries round-robin this many times; the table gives medians (default 3)")
    parser.add_argument("--libraries", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--child", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=int, default=0, metavar="BATCHES",
                        help="print torch.profiler's table of BATCHES training batches of the first --libraries entry, "
                        "in this process, instead of the benchmark")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    epochs = args.epochs or EPOCHS[args.model]
    steps = args.steps or STEPS[args.model]
    encoding = args.encoding or DEFAULT_ENCODING[args.model]
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_images(args.limit)
    if args.profile:
        mode = "pre" if encoding == "all" else encoding
        train_and_test(args.libraries[0], data, args.model, mode, epochs, steps, profile=args.profile)
        return
    if args.child:
        print(json.dumps(train_and_test(args.child, data, args.model, encoding, epochs, steps)))
        return
    names = [n for n in args.libraries
             if n.split("-")[0] not in ("snntorch", "spikingjelly") or importlib.util.find_spec(n)]
    network = "784-128-128-10 MLP" if args.model == "mlp" else "conv SNN 12c5-p2-64c5-p2-10"
    print(machine())
    for i, mode in enumerate(ENCODINGS if encoding == "all" else [encoding]):
        options = ["--model", args.model, "--encoding", mode, "--epochs", str(epochs), "--steps", str(steps)]
        options += ["--limit", str(args.limit)] if args.limit else []
        options += ["--threads", str(args.threads)] if args.threads else []
        rounds = [{name: r for name in names if (r := measure(name, options)) is not None}
                  for _ in range(args.rounds)]
        if not any(rounds):
            raise SystemExit("every library failed (see above)")
        results = combine([r for r in rounds if r])
        if i:
            print()
        plural = "s" * (epochs != 1)
        print_table(f"[encoding: {mode}] {data[-1]}, {network}, T={steps}, batch {BATCH[args.model]}, "
                    f"{epochs} epoch{plural} of {len(data[0])} images, {torch.get_num_threads()} threads", results, mode)


if __name__ == "__main__":
    main()
