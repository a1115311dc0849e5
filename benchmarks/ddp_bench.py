"""Data-parallel tt-train: training samples/s for 1, 2, ... processes on the same global batch.

Each row is one ``torchrun --standalone --nproc_per_node=N -m tracetorch.cli.train`` run
(digits, rate coding, the default 64-128-128-10 MLP, ``--steps`` timesteps, full BPTT) with
the same global ``data.batch_size``, so N processes do the work of one, split N ways, plus
one gradient all-reduce per step. Throughput is the global figure ``metrics.jsonl`` records
(samples of all ranks over the slowest rank's training seconds), averaged over the epochs
after the first (warm-up). On CPU each process gets ``--threads`` threads: on a machine
with few cores more processes only share them. On GPUs pass ``--device cuda --nprocs 1 2 4 8``
(one process per GPU, NCCL).

    python benchmarks/ddp_bench.py [--nprocs 1 2] [--device cpu] [--batch-size 128] [--epochs 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tracetorch.training.metrics import read_jsonl


def run(nproc: int, args: argparse.Namespace, root: Path) -> float:
    run_dir = root / f"n{nproc}"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "tracetorch.cli.train", f"hydra.run.dir={run_dir}", f"trainer.device={args.device}",
               f"data.batch_size={args.batch_size}", f"encoder.num_steps={args.steps}", f"trainer.epochs={args.epochs}",
               f"trainer.limit_train_batches={args.batches}", "trainer.limit_test_batches=1", "trainer.checkpoint=false",
               "trainer.plots=false", "trainer.progress=false", "trainer.amp=false"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{nproc} processes failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    history = read_jsonl(run_dir / "metrics.jsonl")
    timed = history[1:] or history
    return sum(r["samples_per_s"] for r in timed) / len(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (split across the processes)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=10, help="global batches per epoch")
    parser.add_argument("--steps", type=int, default=20, help="encoder timesteps")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process (CPU)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [(n, run(n, args, Path(tmp))) for n in args.nprocs]
    base = results[0][1]
    print(f"device {args.device}, global batch {args.batch_size}, T={args.steps}, {args.threads} thread(s) per process, "
          f"{os.cpu_count()} CPUs visible\n")
    print("| processes | samples/s (global) | speed-up vs first row |")
    print("|---:|---:|---:|")
    for n, rate in results:
        print(f"| {n} | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
