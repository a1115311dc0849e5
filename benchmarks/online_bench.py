"""Online (trace, OTTT) learning vs BPTT and truncated BPTT: memory, time, accuracy.

Three parts, each printing a table (ratios are measured in the same run):

* ``memory``: peak memory held for backward (bytes of the tensors autograd saved and has
  not yet released, counted with ``torch.autograd.graph.saved_tensors_hooks``; plus
  ``torch.cuda.max_memory_allocated`` on CUDA) and wall time per step, for sequences of
  T = 100, 1,000, 10,000 steps, for BPTT, TBPTT (k=10) and trace learning (update every
  step, and every 10 steps). Trace mode must stay flat in T.
* ``mnist``: rate-coded MNIST (5k train / 10k test from ``shared/data`` beside the repo),
  test accuracy of BPTT vs trace learning, same model, loss, optimizer and update cadence.
* ``clicks``: the Poisson clicks stream (trials back to back, no reset), BPTT over each
  trial (states carried, graph cut at trial ends) vs trace learning updating once per
  trial; accuracy on a fresh continuation of the stream.

Run: ``python benchmarks/online_bench.py [--part memory|mnist|clicks|all] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import tracetorch as tt
from tracetorch.online import OnlineLearner, clicks_stream, enable_trace_learning

MNIST_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def snn(inputs: int, hidden: int, outputs: int, trace: bool) -> tt.Sequential:
    net = tt.Sequential(
        nn.Linear(inputs, hidden), tt.snn.LIB(hidden, beta=0.9), nn.Linear(hidden, outputs), tt.snn.LI(outputs, beta=0.9)
    )
    if trace:
        enable_trace_learning(net)
    return net


def setup(mode: str, sizes: tuple[int, int, int], lr: float, loss_scale: int, update_every: int, seed: int
          ) -> tuple[torch.Generator, tt.Sequential, torch.optim.Optimizer, Callable, OnlineLearner]:
    """For ``mode`` ("bptt" or "trace"): a data generator seeded ``seed``, a fresh model (torch seed 0), its Adam
    optimizer, the loss ``CE / loss_scale`` and an :class:`OnlineLearner` updating every ``update_every`` steps."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(seed)
    net = snn(*sizes, trace=mode == "trace")
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y) / loss_scale

    return generator, net, opt, loss_fn, OnlineLearner(net, opt, loss_fn, update_every=update_every)


# memory and time --------------------------------------------------------------------------------------------------


class SavedBytes:
    """Context manager: the peak bytes of tensors saved for backward and still alive."""

    def __init__(self) -> None:
        self.alive = 0
        self.peak = 0

    def pack(self, tensor: torch.Tensor) -> tuple[torch.Tensor, object]:
        size = tensor.numel() * tensor.element_size()
        self.alive += size
        self.peak = max(self.peak, self.alive)
        token = _Token()
        weakref.finalize(token, self._release, size)
        return tensor.detach(), token

    def _release(self, size: int) -> None:
        self.alive -= size

    def __enter__(self) -> SavedBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda packed: packed[0])
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


class _Token:
    pass


def train_sequence(mode: str, steps: int, batch: int, hidden: int, device: torch.device) -> Callable[[], None]:
    """A closure training one sequence of ``steps`` steps in ``mode`` (bptt, tbptt10, trace1, trace10)."""
    torch.manual_seed(0)
    net = snn(2, hidden, 2, trace=mode.startswith("trace")).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xs = torch.bernoulli(torch.full((steps, batch, 2), 0.2, device=device))
    ys = torch.randint(0, 2, (steps, batch), device=device)
    loss_fn = lambda out, y: nn.functional.cross_entropy(out, y) / steps

    def run() -> None:
        net.zero_states()
        if mode.startswith("trace"):
            learner = OnlineLearner(net, opt, loss_fn, update_every=int(mode.removeprefix("trace")))
            for x, y in zip(xs, ys):
                learner.step(x, y)
            learner.flush()
            return
        window = 10 if mode == "tbptt10" else steps
        loss = 0.0
        for t, (x, y) in enumerate(zip(xs, ys)):
            loss = loss + loss_fn(net(x), y)
            if (t + 1) % window == 0 or t == steps - 1:
                loss.backward()
                opt.step()
                opt.zero_grad()
                net.detach_states()
                loss = 0.0

    return run


def bench_memory(lengths: list[int], batch: int, hidden: int, device: torch.device, repeats: int) -> None:
    modes = ["bptt", "tbptt10", "trace1", "trace10"]
    print(f"\n## Memory and time per step vs T (batch {batch}, 2 -> {hidden} LIB -> 2 LI, {device}; "
          f"time: best of {repeats} runs, taken round-robin over the modes; on CPU the process's CPU time)\n")
    cuda = device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time  # CPU: this process's CPU time, blind to other load
    memory: dict[tuple[str, int], tuple[float, str]] = {}
    for mode in modes:
        for steps in lengths:
            with SavedBytes() as saved:
                train_sequence(mode, steps, batch, hidden, device)()
            cuda_peak = ""
            if cuda:  # a second, hook-free run for the allocator's peak
                run = train_sequence(mode, steps, batch, hidden, device)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                run()
                torch.cuda.synchronize()
                cuda_peak = f"{torch.cuda.max_memory_allocated() / 2**20:.1f} | "
            memory[mode, steps] = (saved.peak / 2**20, cuda_peak)
    times: dict[tuple[str, int], float] = {}
    for steps in lengths:
        for _ in range(repeats):
            for mode in modes:
                run = train_sequence(mode, steps, batch, hidden, device)
                start = clock()
                run()
                if cuda:
                    torch.cuda.synchronize()
                per_step = (clock() - start) / steps * 1e3
                times[mode, steps] = min(times.get((mode, steps), float("inf")), per_step)
    head = f"| mode | T | peak saved for backward (MiB) | {'peak CUDA alloc (MiB) | ' if cuda else ''}time/step (ms) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for mode in modes:
        for steps in lengths:
            mib, cuda_peak = memory[mode, steps]
            print(f"| {mode} | {steps} | {mib:.3f} | {cuda_peak}{times[mode, steps]:.3f} |")
    lo, hi = lengths[0], lengths[-1]
    print(f"\nRatios T={hi} / T={lo} (1.0 = flat):\n")
    print("| mode | memory ratio | time/step ratio |\n|---|---|---|")
    for mode in modes:
        print(f"| {mode} | {memory[mode, hi][0] / memory[mode, lo][0]:.2f} | {times[mode, hi] / times[mode, lo]:.2f} |")


# MNIST ------------------------------------------------------------------------------------------------------------


def load_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    if not (MNIST_ROOT / "MNIST" / "raw").is_dir():
        return None
    from torchvision.datasets import MNIST

    train, test = MNIST(str(MNIST_ROOT), train=True, download=False), MNIST(str(MNIST_ROOT), train=False, download=False)
    prep = lambda d: d.data.reshape(len(d.data), -1).float() / 255.0
    return prep(train), train.targets, prep(test), test.targets


def bench_mnist(epochs: int, steps: int, hidden: int, limit: int | None) -> None:
    data = load_mnist()
    if data is None:
        print(f"\n## MNIST: skipped, no data at {MNIST_ROOT}")
        return
    x_train, y_train, x_test, y_test = data
    if limit:  # the 5k training images are sorted by class: subsample at random
        pick = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))[:limit]
        x_train, y_train, x_test, y_test = x_train[pick], y_train[pick], x_test[:limit], y_test[:limit]
    print(f"\n## Rate-coded MNIST ({len(x_train)} train / {len(x_test)} test, T={steps}, 784 -> {hidden} LIB -> 10 LI, "
          f"{epochs} epochs, Adam 1e-3, batch 100, loss mean_t CE(out_t), one update per sequence)\n")
    print("| mode | test accuracy | train time (s) |\n|---|---|---|")
    accuracies = {}
    for mode in ("bptt", "trace"):
        generator, net, opt, loss_fn, learner = setup(mode, (784, hidden, 10), lr=1e-3, loss_scale=steps,
                                                      update_every=steps, seed=0)
        start = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(len(x_train), generator=generator)
            for i in range(0, len(order), 100):
                x, y = x_train[order[i:i + 100]], y_train[order[i:i + 100]]
                spikes = torch.bernoulli(x.expand(steps, *x.shape), generator=generator)
                net.zero_states()
                if mode == "trace":
                    learner.run(spikes, [y] * steps)
                else:
                    loss = sum(loss_fn(out, y) for out in net.run(spikes))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        seconds = time.perf_counter() - start
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x_test), 1000):
                x, y = x_test[i:i + 1000], y_test[i:i + 1000]
                net.zero_states()
                out = net.run(torch.bernoulli(x.expand(steps, *x.shape), generator=generator)).mean(0)
                correct += (out.argmax(1) == y).sum().item()
        accuracies[mode] = correct / len(x_test)
        print(f"| {mode} | {accuracies[mode]:.2%} | {seconds:.1f} |")
    print(f"\ntrace - bptt: {100 * (accuracies['trace'] - accuracies['bptt']):+.2f} points")


# Poisson clicks ---------------------------------------------------------------------------------------------------


def bench_clicks(trials: int, test_trials: int, batch: int, hidden: int, trial_steps: int = 40, decision: int = 10) -> None:
    print(f"\n## Poisson clicks stream ({trials} training trials x {trial_steps} steps = {trials * trial_steps} steps, "
          f"{batch} streams, no reset; 2 -> {hidden} LIB -> 2 LI; Adam 3e-3; one update per trial)\n")
    print(f"| mode | accuracy on the next {test_trials} trials | train time (s) |\n|---|---|---|")
    accuracies = {}
    for mode in ("bptt", "trace"):
        generator, net, opt, loss_fn, learner = setup(mode, (2, hidden, 2), lr=3e-3, loss_scale=decision,
                                                      update_every=trial_steps, seed=1)
        start = time.perf_counter()
        for _ in range(0, trials, 20):
            stream = clicks_stream(20, batch, trial_steps, decision, generator=generator)
            targets = [y if d else None for y, d in zip(stream.labels, stream.decide)]
            if mode == "trace":
                learner.run(stream.clicks, targets)
                continue
            for trial in range(20):
                window = slice(trial * trial_steps, (trial + 1) * trial_steps)
                loss = sum(loss_fn(net(x), y) for x, y in zip(stream.clicks[window], targets[window]) if y is not None)
                opt.zero_grad()
                loss.backward()
                opt.step()
                net.detach_states()
        seconds = time.perf_counter() - start
        test = clicks_stream(test_trials, batch, trial_steps, decision, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            out = torch.stack([net(x) for x in test.clicks])
        last = torch.arange(trial_steps - 1, len(test.clicks), trial_steps)
        accuracies[mode] = (out[last].argmax(-1) == test.labels[last]).float().mean().item()
        print(f"| {mode} | {accuracies[mode]:.2%} | {seconds:.1f} |")
    print(f"\ntrace - bptt: {100 * (accuracies['trace'] - accuracies['bptt']):+.2f} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["memory", "mnist", "clicks", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not numbers to report")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier timings)")
    parser.add_argument("--repeats", type=int, default=3, help="timing runs per (mode, T); the best is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.part in ("memory", "all"):
        bench_memory([10, 100] if args.quick else [100, 1000, 10000], batch=16, hidden=64, device=device,
                     repeats=1 if args.quick else args.repeats)
    if args.part in ("mnist", "all"):
        bench_mnist(epochs=1 if args.quick else 5, steps=5 if args.quick else 25, hidden=256, limit=500 if args.quick else None)
    if args.part in ("clicks", "all"):
        bench_clicks(trials=20 if args.quick else 400, test_trials=10 if args.quick else 100, batch=32, hidden=64)


if __name__ == "__main__":
    main()
