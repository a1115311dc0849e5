"""
Scaling out: one run on many processes
======================================

``tt-train`` runs data-parallel under PyTorch's own launchers. Each process (one per GPU,
or per CPU slot) builds the same model from the same seed, draws the same **global**
batch, trains on its contiguous slice, and averages gradients with the others at every
optimizer step: N processes end with the weights one process would have (to float
rounding). Rank 0 alone writes the run directory, metrics, plots and checkpoints.

.. code-block:: bash

   torchrun --nproc_per_node=2 -m tracetorch.cli.train data.batch_size=512     # one machine, 2 GPUs (or CPU slots)
   torchrun --no-python --nproc_per_node=2 tt-train data.batch_size=512        # the same
   torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=node1:29500 \\
            -m tracetorch.cli.train hydra.run.dir=runs/big data.batch_size=1024
   sbatch examples/slurm_ddp.sbatch experiment=mnist_conv data.root=/data     # SLURM: srun, one task per GPU

This page runs the pieces that decide what each process does, in this one process:
:mod:`tracetorch.training.distributed` is the same code with or without a launcher.
"""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

import tracetorch as tt
from tracetorch.training.distributed import WorldError, detect_world

# %%
# Which process am I?
# -------------------
# :func:`~tracetorch.training.distributed.detect_world` reads the launcher's environment:
# torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, or inside an ``srun`` step SLURM's
# ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``. Started by hand, this process is the
# single-process world, whose collectives do nothing.

here = detect_world()  # os.environ
print(f"this process: rank {here.rank} of {here.size} ({here.launcher}), writes files: {here.is_main}")

torchrun = detect_world({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
print(f"torchrun's second process: rank {torchrun.rank} of {torchrun.size}, writes files: {torchrun.is_main}")

slurm = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
try:
    detect_world(slurm)
except WorldError as err:
    print(f"WorldError: {err}")
world = detect_world({**slurm, "MASTER_ADDR": "node1", "MASTER_PORT": "29500"})
print(f"an srun task: rank {world.rank} of {world.size}, GPU {world.local_rank} of its node")

# %%
# The global batch, sliced
# ------------------------
# ``data.batch_size`` is the global batch: every rank draws the same one (same sample
# order, same encoder spikes) and keeps its contiguous slice (:meth:`World.shard
# <tracetorch.training.distributed.World.shard>`; sizes differ by at most one). A last
# batch with fewer samples than ranks is dropped on every rank alike.

for n in (128, 10, 3):
    slices = [detect_world({"RANK": str(r), "WORLD_SIZE": "4"}).shard(n) for r in range(4)]
    print(f"global batch {n:3d} on 4 ranks:", [(s.start, s.stop) if s else None for s in slices])

# %%
# Averaged gradients are the whole batch's
# ----------------------------------------
# Each rank scales its mean loss by its share of the batch
# (:meth:`~tracetorch.training.distributed.World.loss_weight`); one all-reduce sums the
# gradients and divides by the world size. Done by hand here for 3 ranks and an uneven
# batch of 10, it gives the gradient of the whole batch in one process:

torch.manual_seed(0)
model = tt.Sequential(nn.Linear(6, 16), tt.snn.LIB(16), nn.Linear(16, 3), tt.snn.LI(3))
x_seq, y = torch.rand(12, 10, 6), torch.randint(0, 3, (10,))   # 12 steps, global batch of 10


def gradients(x: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> list[torch.Tensor]:
    model.zero_grad()
    model.zero_states()
    loss = nn.functional.cross_entropy(model.run(x)[-1], target) * weight
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


whole = gradients(x_seq, y)
size = 3
summed = None
for rank in range(size):
    w = detect_world({"RANK": str(rank), "WORLD_SIZE": str(size)})
    part = w.shard(len(y))
    g = gradients(x_seq[:, part], y[part], w.loss_weight(part.stop - part.start, len(y)))
    print(f"rank {rank}: samples {part.start}..{part.stop - 1}, loss weight {w.loss_weight(part.stop - part.start, 10):.2f}")
    summed = g if summed is None else [a + b for a, b in zip(summed, g)]
averaged = [g / size for g in summed]
error = max((a - b).abs().max().item() for a, b in zip(averaged, whole))
print(f"largest difference from the one-process gradient: {error:.1e}")
assert error < 1e-6

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.scatter(torch.cat([g.flatten() for g in whole]), torch.cat([g.flatten() for g in averaged]), s=6)
ax.set(xlabel="gradient, whole batch in one process", ylabel="averaged over 3 ranks' slices",
       title="one all-reduce gives the global batch's gradient")
fig.tight_layout()

# %%
# Two real processes
# ------------------
# The same computation under ``torchrun`` with two CPU processes (gloo): each joins the
# process group (:func:`~tracetorch.training.distributed.init_world`), takes rank 0's
# parameters, trains on its half of the batch and averages gradients with one all-reduce.
# Rank 0 saves what it ended with; this process compares it with the whole batch's gradient.

script = textwrap.dedent("""
    import torch
    from torch import nn
    import tracetorch as tt
    from tracetorch.training.distributed import init_world

    world = init_world("cpu")
    torch.manual_seed(world.rank)                      # different initial weights on purpose:
    model = tt.Sequential(nn.Linear(6, 16), tt.snn.LIB(16), nn.Linear(16, 3), tt.snn.LI(3))
    world.broadcast_parameters(model)                  # rank 0's win
    torch.manual_seed(1)
    x, y = torch.rand(12, 10, 6), torch.randint(0, 3, (10,))   # the same global batch on every rank
    part = world.shard(len(y))
    model.zero_states()
    loss = nn.functional.cross_entropy(model.run(x[:, part])[-1], y[part])
    (loss * world.loss_weight(part.stop - part.start, len(y))).backward()
    world.average_gradients(list(model.parameters()))
    print(f"rank {world.rank} of {world.size}: samples {part.start}..{part.stop - 1}, local loss {loss.item():.4f}")
    if world.is_main:
        torch.save({"state": model.state_dict(), "x": x, "y": y,
                    "grads": [p.grad for p in model.parameters()]}, "rank0.pt")
""")
folder = Path(tempfile.mkdtemp())
(folder / "ddp_demo.py").write_text(script)
package_root = str(Path(tt.__file__).resolve().parents[1])
env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    env.pop(key, None)
run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      "ddp_demo.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=180)
print("\n".join(sorted(line for line in run.stdout.splitlines() if line.startswith("rank"))))
assert run.returncode == 0, run.stderr[-2000:]

saved = torch.load(folder / "rank0.pt")
model.load_state_dict(saved["state"])
whole = gradients(saved["x"], saved["y"])
error = max((a - b).abs().max().item() for a, b in zip(saved["grads"], whole))
print(f"2 processes vs one process, largest gradient difference: {error:.1e}")
assert error < 1e-6

# %%
# What stays per rank
# -------------------
# Hidden states are per rank and never communicated; each rank's global RNG (stochastic
# quantizers, dropout) is seeded from ``(seed, rank)``; metrics (loss, accuracy, spike
# counts) are summed over the ranks, so ``metrics.jsonl`` holds global figures; a NaN loss
# or a Ctrl-C on any rank is decided on all ranks at the same batch. Checkpoints hold every
# rank's RNG state: ``trainer.resume=auto`` on the same number of processes continues
# exactly, on another number it continues the same global batches and says so.
#
# Sweeps are the other way to use many machines: independent single-process jobs through
# Hydra's launcher plugins (``tt-train -m hydra/launcher=joblib ...`` or
# ``hydra/launcher=slurm_gpu``; see :doc:`../getting-started`).
# ``benchmarks/ddp_bench.py`` measures samples per second for 1, 2, ... processes.
