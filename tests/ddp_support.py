"""Helpers for the multi-process tests: launching tt-train on several ranks, a dataset with one poisoned sample."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import torch
from train_support import env_with_support

from tracetorch.data import Splits
from tracetorch.training.setup import derive_seed

TINY = ["encoder.num_steps=3", "model.layers.1.Linear.out_features=16", "model.layers.3.Linear.out_features=16",
        "data.batch_size=16", "data.eval_batch_size=64", "trainer.epochs=2", "trainer.limit_train_batches=4",
        "trainer.limit_test_batches=1", "trainer.plots=false", "trainer.progress=false", "trainer.device=cpu", "seed=3"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_env(rank: int, size: int, port: int) -> dict[str, str]:
    env = env_with_support()
    env.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               TRACETORCH_KERNELS="reference", OMP_NUM_THREADS="1")
    return env


def spawn_ranks(args: list[str], cwd: Path, size: int = 2, log: str = "ranks") -> list[subprocess.Popen]:
    """Start ``tt-train args`` as ``size`` ranks, the way torchrun or srun would (the environment only)."""
    port = free_port()
    processes = []
    for rank in range(size):
        out = open(cwd / f"{log}.{rank}.log", "ab")  # noqa: SIM115 - closed with the process
        processes.append(subprocess.Popen([sys.executable, "-m", "tracetorch.cli.train", *args], cwd=cwd,
                                          env=rank_env(rank, size, port), stdout=out, stderr=out, start_new_session=True))
    return processes


def wait_all(processes: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


def torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    env = env_with_support()
    env.update(TRACETORCH_KERNELS="reference", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "tracetorch.cli.train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def poisoned(poison_epoch: int = 0, poison_batch: int = 0, poison_slot: int = 12, seed: int = 3, batch_size: int = 16,
             n: int = 256) -> Splits:
    """Random 1x4x4 images, 10 classes; the sample at ``poison_slot`` of batch ``poison_batch`` of ``poison_epoch`` holds
    a NaN (slot 12 of 16 is on rank 1 of 2). The trainer's sample order is recomputed here from ``(seed, 0, epoch)``."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 1, 4, 4, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, 0, poison_epoch)))
    x[order[poison_batch * batch_size + poison_slot], 0, 1, 2] = float("nan")
    return Splits.from_tensors((x, y), (x[:64].nan_to_num(), y[:64]), num_classes=10)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from tracetorch.training import load_checkpoint
    from tracetorch.training.checkpoint import latest_checkpoint

    return load_checkpoint(latest_checkpoint(run_dir)).weights


def log_text(cwd: Path, log: str = "ranks", size: int = 2) -> str:
    return "\n".join(f"--- rank {r}\n" + (cwd / f"{log}.{r}.log").read_text(errors="replace") for r in range(size))


__all__ = ["TINY", "spawn_ranks", "wait_all", "torchrun", "poisoned", "final_weights", "log_text"]
