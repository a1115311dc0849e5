"""Data-parallel training on several processes: the launcher's world, collectives, sharding, rank 0's duties.

``torchrun --nproc_per_node=N tt-train ...`` (or ``srun`` on SLURM) starts one process per
GPU (or per CPU slot); each builds the same model from the same seed and trains on its
slice of every batch. :class:`World` is what the trainer asks about that: which rank it
is, whether to write files (rank 0 only), and the collectives it needs. A process that no
launcher started is the single-process world, whose collectives do nothing, so the
single-process path is the same code with no communication.

* **Detection** (:func:`detect_world`): torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``,
  else, inside an ``srun`` step (``SLURM_STEP_NUM_TASKS`` set), SLURM's
  ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` (with ``MASTER_ADDR`` and
  ``MASTER_PORT`` exported by the batch script); otherwise one process. The batch script
  itself (``SLURM_NTASKS=8`` but no srun step) is one process, as is a one-task job.
* **Init** (:func:`init_world`): NCCL on CUDA (each rank pins ``cuda:LOCAL_RANK``), gloo on CPU.
* **Batches**: ``data.batch_size`` is the **global** batch. Every rank draws the same global
  batch (same sample order, same encoder generator, keyed by ``(seed, epoch, batch)``) and
  keeps its contiguous slice (:meth:`World.shard`), so every rank runs the same number of
  steps, and N processes see exactly the samples and spikes one process sees. A last batch
  with fewer samples than ranks is dropped (all ranks agree, from global numbers).
* **Gradients** (:meth:`World.average_gradients`): one all-reduce of all gradients per
  optimizer step, weighted by each rank's share of the batch, so the update is the one
  of the whole batch in one process (to float rounding). This is what
  ``DistributedDataParallel`` computes; it is done at the optimizer step rather than by
  DDP's backward hooks because the learning rules call backward several times per step
  (``tbptt``, ``trace``) and run whole sequences through ``model.run``, which DDP's
  forward wrapper does not see. Hidden states are per rank and never communicated.
* **Decisions**: a non-finite loss anywhere, a stop signal anywhere (:meth:`World.any`)
  is seen by every rank at the same point, so no rank waits on one that left.
* **Metrics**: the epoch's sums (loss, correct, samples, spikes) are all-reduced
  (:meth:`World.reduce_meter`): ``metrics.jsonl`` holds the global figures.

Example (the single-process world: collectives are identities):
    >>> from tracetorch.training.distributed import detect_world
    >>> world = detect_world({})
    >>> world.size, world.rank, world.is_main, world.any(False), world.shard(10)
    (1, 0, True, False, slice(0, 10, None))
    >>> w = detect_world({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    >>> w.rank, w.size, w.local_rank, w.shard(10), w.shard(3)
    (1, 4, 1, slice(3, 6, None), None)
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tracetorch.training.metrics import Meter

__all__ = ["World", "detect_world", "init_world", "WorldError", "RANK_SEED_STREAM"]

log = logging.getLogger("tracetorch.training")
RANK_SEED_STREAM = 7  # derive_seed(seed, RANK_SEED_STREAM, rank[, step]): each rank's global RNG (stochastic quantizers)


class WorldError(ValueError):
    """A launcher environment that cannot work (missing rendezvous address, inconsistent ranks, wrong device)."""


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise WorldError(f"environment variable {key}={env[key]!r} is not an integer") from None


@dataclass
class World:
    """The processes training one model: ``rank`` of ``size``, ``local_rank`` on this machine, the device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launcher: str = "single"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run dir, logs and checkpoints."""
        return self.rank == 0

    # ---- batches -------------------------------------------------------------------

    def shard(self, n: int) -> slice | None:
        """This rank's contiguous part of a global batch of ``n`` (sizes differ by at most one); None if ``n < size``."""
        if n < self.size:
            return None
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def loss_weight(self, local: int, total: int) -> float:
        """Factor on this rank's mean loss so that averaging gradients over ranks gives the global batch mean."""
        return 1.0 if not self.distributed else local * self.size / total

    # ---- collectives ----------------------------------------------------------------

    def _sum(self, values: list[float], op: Any = None) -> list[float]:
        import torch.distributed as dist

        buffer = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(buffer, op=op or dist.ReduceOp.SUM)
        return buffer.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (one all-reduce; none in one process)."""
        if not self.distributed:
            return flag
        return self._sum([1.0 if flag else 0.0])[0] > 0

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Rank 0's parameters on every rank (they start equal from the same seed; this makes sure)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for param in model.parameters():
                dist.broadcast(param.data, src=0)

    def average_gradients(self, params: list[Tensor]) -> None:
        """Sum the (loss-weighted) gradients of every rank and divide by the world size, in one flat all-reduce.

        A parameter gets a gradient when any rank has one (a parameter no rank used keeps ``None``,
        so the optimizer treats it as one process would).
        """
        if not self.distributed or not params:
            return
        import torch.distributed as dist

        for dtype in dict.fromkeys(p.dtype for p in params):  # one flat buffer per dtype (usually one)
            group = [p for p in params if p.dtype == dtype]
            grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=dtype, device=p.device)
                     for p in group]
            present = torch.tensor([p.grad is not None for p in group], dtype=dtype, device=grads[0].device)
            flat = torch.cat([*grads, present])
            dist.all_reduce(flat)
            flat /= self.size
            offset = 0
            for p, g in zip(group, grads):
                p.grad = flat[offset : offset + g.numel()].view_as(p)  # views of one buffer, as DDP's buckets
                offset += g.numel()
            for p, used in zip(group, flat[offset:].tolist()):
                if used == 0:
                    p.grad = None

    def reduce_meter(self, meter: Meter) -> Meter:
        """The global meter: sums of loss, correct, samples and spikes; the slowest rank's seconds; skips (agreed)."""
        if not self.distributed:
            return meter
        import torch.distributed as dist

        sums = self._sum([meter.loss_sum, meter.correct, meter.samples, meter.spike_total, meter.spike_numel])
        slowest, skipped = self._sum([meter.seconds, meter.skipped], op=dist.ReduceOp.MAX)
        return Meter(loss_sum=sums[0], correct=round(sums[1]), samples=round(sums[2]), spike_total=sums[3],
                     spike_numel=round(sums[4]), seconds=slowest, skipped=round(skipped), extra=dict(meter.extra))

    # ---- per-rank randomness and resuming --------------------------------------------

    def seed_rank(self, seed: int, step: int | None = None) -> None:
        """Give each rank its own global RNG stream (stochastic quantizers, dropout), from ``(seed, rank[, step])``."""
        if not self.distributed:
            return
        from tracetorch.training.setup import derive_seed, seed_everything

        keys = (seed, RANK_SEED_STREAM, self.rank) + (() if step is None else (step,))
        seed_everything(derive_seed(*keys))

    def checkpoint_extras(self, rng: dict[str, Any]) -> dict[str, Any]:
        """What a checkpoint adds in a multi-process run: the world size and every rank's RNG state (collective)."""
        if not self.distributed:
            return {}
        return {"world_size": self.size, "rank_rng": self.gather(rng)}

    def on_resume(self, trainer: Any, state: dict[str, Any]) -> None:
        """Per-rank parts of a resumed state: this rank's RNG; the epoch's partial sums stay on rank 0 only."""
        from tracetorch.training import checkpoint as ckpt_files

        saved = int(state.get("world_size", 1))
        if saved == self.size:
            ranks = state.get("rank_rng")
            if ranks:
                ckpt_files.restore_rng(ranks[self.rank])
        else:
            self.seed_rank(trainer.config.seed, trainer.global_step)
            if self.is_main:
                log.warning("resumed a %d-process checkpoint on %d processes: the same global batches, sample order and "
                            "encodings continue; the gradient sums run in a different order (float rounding) and each "
                            "rank's global RNG (stochastic quantizers, dropout) restarts from (seed, rank, step)",
                            saved, self.size)
        if not self.is_main:
            trainer.meter = Meter()  # the saved meter is already the global one: count it once


def detect_world(env: Mapping[str, str] | None = None) -> World:
    """The world the launcher describes in ``env`` (default ``os.environ``): torchrun, SLURM, or one process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        size, rank = _int(env, "WORLD_SIZE"), _int(env, "RANK")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        launcher = "torchrun"
    elif "SLURM_STEP_NUM_TASKS" in env and _int(env, "SLURM_NTASKS" if "SLURM_NTASKS" in env else "SLURM_STEP_NUM_TASKS") > 1:
        size, rank = _int(env, "SLURM_NTASKS" if "SLURM_NTASKS" in env else "SLURM_STEP_NUM_TASKS"), _int(env, "SLURM_PROCID")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise WorldError(f"SLURM started {size} tasks but {' and '.join(missing)} is not set; export MASTER_ADDR (the "
                             f"first node: scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) and MASTER_PORT in the "
                             f"batch script (see examples/slurm_ddp.sbatch)")
        launcher = "slurm"
    else:
        return World()
    if not 0 <= rank < size:
        raise WorldError(f"rank {rank} is outside the world of {size} processes")
    return World(rank=rank, size=size, local_rank=local, launcher=launcher)


def _device(world: World, name: str) -> torch.device:
    from tracetorch.training.setup import resolve_device

    if not world.distributed:
        return resolve_device(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise WorldError(f"trainer.device={name!r} but CUDA is not available on rank {world.rank}")
    if ":" in name:
        raise WorldError(f"trainer.device={name!r}: under {world.launcher} each rank uses cuda:LOCAL_RANK; set "
                         f"trainer.device=cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES")
    if world.local_rank >= torch.cuda.device_count():
        raise WorldError(f"local rank {world.local_rank} but only {torch.cuda.device_count()} GPUs are visible; start "
                         f"at most one process per GPU (--nproc_per_node)")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def init_world(device: str = "auto", env: Mapping[str, str] | None = None) -> World:
    """Detect the world, pick this rank's device and join the process group (NCCL on CUDA, gloo on CPU).

    The group is joined once per process (later calls reuse it) and left at exit.
    """
    world = detect_world(env)
    world.device = _device(world, device)
    if world.distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            if world.launcher == "slurm":  # torch's env:// rendezvous reads these names
                os.environ.update(RANK=str(world.rank), WORLD_SIZE=str(world.size), LOCAL_RANK=str(world.local_rank))
            dist.init_process_group("nccl" if world.device.type == "cuda" else "gloo", rank=world.rank,
                                    world_size=world.size)
            atexit.register(_leave)
        elif dist.get_world_size() != world.size:
            raise WorldError(f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE says {world.size}")
    return world


def _leave() -> None:
    """Leave the group together: a rank tearing gloo down while a peer still talks to it aborts that peer."""
    import datetime

    import torch.distributed as dist

    if dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
            else:
                dist.barrier()
        except Exception:  # noqa: BLE001 - a peer already gone: nothing to wait for
            pass
        dist.destroy_process_group()
