"""One LIF layer, forward over T steps plus backward: traceTorch step / sequence mode vs snnTorch, SpikingJelly.

The input of every library is ``x = 0.3 + 0.5 * randn(T, 64, N)`` (requires grad). Rows marked
"binary" emit 0/1 spikes (traceTorch with ``quant_fn=round_ste()`` in step and sequence mode,
snnTorch, SpikingJelly); the "graded" row ``tracetorch-default`` is ``tt.snn.LIB(N, beta=0.9)``
with no ``quant_fn``, what a user gets by default, run in sequence mode.
Each (library, case) runs in a fresh subprocess, so that the peak memory is that process's
resident-set high-water mark during one forward+backward (minus what it held before), and
the autograd memory is the bytes of the tensors autograd saved for the backward pass.
Times are the median of 15 runs (``--repeats``). The other libraries are optional (``pip install -e
.[bench]``); missing ones are skipped. Ratios are against the fastest / leanest of the other
libraries measured in the same run.

    python benchmarks/layer_bench.py                 # the standard table
    python benchmarks/layer_bench.py --memory        # adds BPTT memory at T=1000, N=1024
    python benchmarks/layer_bench.py --threads 1     # one thread everywhere (steadier on a busy machine)
    python benchmarks/layer_bench.py --cases 128x25 4096x100 --repeats 1   # a quick check on a subset
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys

CASES = [(128, 25), (1024, 25), (4096, 25), (1024, 100), (4096, 100)]
MEMORY_CASE = (1024, 1000)
BATCH = 64
LIBRARIES = ["tracetorch-default", "tracetorch-step", "tracetorch-seq", "snntorch", "spikingjelly"]
GRADED = {"tracetorch-default"}


def machine() -> str:
    """CPU model, core count, torch threads and torch version, for the line above a table."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def parse_case(text: str) -> tuple[int, int]:
    """``"1024x100"`` -> ``(1024, 100)`` (N, T)."""
    n, _, steps = text.partition("x")
    try:
        return int(n), int(steps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NxT, e.g. 1024x100, got {text!r}") from None


def _available(lib: str) -> bool:
    module = {"snntorch": "snntorch", "spikingjelly": "spikingjelly"}.get(lib)
    return module is None or importlib.util.find_spec(module) is not None


def _make(lib: str, n: int):  # noqa: ANN202 - returns a closure over the library's objects
    """A function ``x_seq -> outputs [T, B, N]`` for ``lib`` (LIF: beta 0.9, threshold 1, subtractive reset).

    Binary spikes everywhere except ``tracetorch-default`` (no ``quant_fn``: graded output).
    """
    import torch

    if lib.startswith("tracetorch"):
        import tracetorch as tt

        if lib in GRADED:
            layer = tt.snn.LIB(n, beta=0.9)
        else:
            layer = tt.snn.LIB(n, beta=0.9, quant_fn=tt.functional.round_ste())  # binary spikes, like the others
        if lib != "tracetorch-step":
            def run(x):
                layer.zero_states()
                return layer.run(x)
        else:
            def run(x):
                layer.zero_states()
                return torch.stack([layer(x_t) for x_t in x])
        return run
    if lib == "snntorch":
        import snntorch as snn

        lif = snn.Leaky(beta=0.9, threshold=1.0)

        def run(x):
            mem = lif.init_leaky()
            spikes = []
            for x_t in x:
                spk, mem = lif(x_t, mem)
                spikes.append(spk)
            return torch.stack(spikes)
        return run
    from spikingjelly.activation_based import functional, neuron, surrogate

    node = neuron.LIFNode(tau=10.0, decay_input=False, v_reset=None, surrogate_function=surrogate.Sigmoid(),
                          step_mode="m")

    def run(x):
        functional.reset_net(node)
        return node(x)
    return run


def child(lib: str, n: int, steps: int, repeats: int) -> dict:
    """Runs inside the subprocess: time, peak RSS and autograd-saved bytes of one forward+backward."""
    import resource
    import statistics
    import time

    import torch

    torch.manual_seed(0)
    run = _make(lib, n)
    x = (0.3 + 0.5 * torch.randn(steps, BATCH, n)).requires_grad_(True)
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def once() -> None:
        out = run(x)
        out.sum().backward()
        x.grad = None

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        once()
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    saved_bytes = sum(nbytes for ptr, nbytes in saved.items() if ptr != x.untyped_storage().data_ptr())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return {"ms": 1000 * statistics.median(times), "peak_mb": peak / 2**20, "saved_mb": saved_bytes / 2**20}


THREADS: list[str] = []


def measure(lib: str, n: int, steps: int, repeats: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", lib, str(n), str(steps), str(repeats), *THREADS]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {lib} N={n} T={steps} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(cases: list[tuple[int, int]], repeats: int, memory_only: bool = False) -> None:
    libs = [lib for lib in LIBRARIES if _available(lib)]
    print(machine())
    print(f"batch {BATCH}, input 0.3 + 0.5 * randn; forward over T + backward")
    header = (f"{'case':>14} {'library':>18} {'output':>7} {'ms':>9} {'peak MB':>9} {'saved MB':>9} "
              f"{'time ratio':>11} {'mem ratio':>10}")
    print(header)
    print("-" * len(header))
    for n, steps in cases:
        results = {lib: measure(lib, n, steps, 1 if memory_only else repeats) for lib in libs}
        others = [r for lib, r in results.items() if r and not lib.startswith("tracetorch")]
        best_ms = min((r["ms"] for r in others), default=None)
        best_peak = min((r["peak_mb"] for r in others), default=None)
        for lib, r in results.items():
            if r is None:
                continue
            t_ratio = f"{best_ms / r['ms']:.2f}x" if best_ms else "-"
            m_ratio = f"{r['peak_mb'] / best_peak:.2f}" if best_peak else "-"
            kind = "graded" if lib in GRADED else "binary"
            print(f"{f'N={n} T={steps}':>14} {lib:>18} {kind:>7} {r['ms']:9.1f} {r['peak_mb']:9.0f} {r['saved_mb']:9.0f} "
                  f"{t_ratio:>11} {m_ratio:>10}")
    print("output: binary = 0/1 spikes, graded = traceTorch's default output (no quant_fn); "
          "time ratio: fastest other (non-traceTorch, binary) library's time / this time (higher is faster); "
          "mem ratio: this peak / the leanest other library's peak")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=4, metavar=("LIB", "N", "T", "REPEATS"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads in every measurement (default: torch's)")
    parser.add_argument("--memory", action="store_true", help=f"also measure BPTT memory at N, T = {MEMORY_CASE}")
    parser.add_argument("--cases", nargs="+", type=parse_case, default=CASES, metavar="NxT",
                        help="run only these cases, e.g. --cases 128x25 4096x100 (default: the standard table)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        THREADS.extend(["--threads", str(args.threads)])
    if args.child:
        lib, n, steps, repeats = args.child
        print(json.dumps(child(lib, int(n), int(steps), int(repeats))))
        return
    table(args.cases, args.repeats)
    if args.memory:
        print()
        table([MEMORY_CASE], 1, memory_only=True)


if __name__ == "__main__":
    main()
