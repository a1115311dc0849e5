"""Data-parallel tt-train on 2 CPU processes (gloo): same weights as 1 process, exact resume after SIGKILL, collective
NaN decisions. Each multi-process run is a real launch (torchrun, or the RANK/WORLD_SIZE environment srun-style)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch
from ddp_support import TINY, final_weights, log_text, spawn_ranks, torchrun, wait_all
from tracetorch.cli.config import compose_config

from tracetorch.training import Trainer
from tracetorch.training.distributed import World, WorldError, detect_world
from tracetorch.training.metrics import read_jsonl

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")
# 1 vs 2 processes: the same samples, spikes and averaged gradient; only the order of float sums differs
# (a rank's batch mean, then the average of two). Measured: max |dw| ~3e-8 after 8 Adam steps.
WEIGHT_TOLERANCE = 1e-5
POISON = ["data.factory=ddp_support:poisoned", "~data.name", "~data.test_size", "~data.split_seed", "encoder=direct"]


def one_process_weights(overrides: list[str]) -> dict[str, torch.Tensor]:
    config = compose_config(overrides).to_dict()
    config["trainer"].update(run_dir=None, checkpoint=False, loggers=[])
    trainer = Trainer(config)
    trainer.fit()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= atol, f"largest weight difference {worst:g} > {atol:g}"


def test_world_detection_torchrun_slurm_and_single():
    assert detect_world({}) == World()
    srun = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1"}
    w = detect_world({**srun, "MASTER_ADDR": "n1", "MASTER_PORT": "29500"})
    assert (w.rank, w.size, w.local_rank, w.launcher) == (3, 8, 1, "slurm")
    assert detect_world({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}).size == 1  # the batch script itself, not an srun step
    assert detect_world({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1"}).size == 1  # one task
    with pytest.raises(WorldError, match="MASTER_ADDR and MASTER_PORT is not set"):
        detect_world(srun)
    with pytest.raises(WorldError, match="rank 2 is outside the world of 2"):
        detect_world({"RANK": "2", "WORLD_SIZE": "2"})
    # each rank's global RNG (stochastic quantizers): its own stream, the same on every run
    draws = []
    for rank in (0, 1, 0):
        World(rank=rank, size=2).seed_rank(5)
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])
    # shards of a global batch of 11 on 3 ranks: contiguous, sizes 4, 4, 3, together the whole batch
    parts = [World(rank=r, size=3).shard(11) for r in range(3)]
    assert parts == [slice(0, 4), slice(4, 8), slice(8, 11)]
    assert [World(rank=r, size=3).loss_weight(p.stop - p.start, 11) for r, p in enumerate(parts)] == [12 / 11] * 2 + [9 / 11]


LONG = [*TINY, "trainer.limit_train_batches=40", "trainer.checkpoint_every=10"]  # 80 steps, checkpoints mid-epoch


@pytest.fixture(scope="module")
def torchrun_bptt(tmp_path_factory) -> Path:
    """A clean 2-process bptt run of ``LONG`` through torchrun itself (shared by two tests)."""
    root = tmp_path_factory.mktemp("torchrun")
    done = torchrun([*LONG, f"hydra.run.dir={root / 'run'}"], root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "run"


@pytest.mark.parametrize("learning", ["bptt", "trace", "tbptt"])
def test_two_processes_end_with_the_weights_of_one(tmp_path, learning, request):
    if learning == "bptt":  # through torchrun itself
        overrides, run_dir = LONG, request.getfixturevalue("torchrun_bptt")
    else:  # through the launcher environment, as srun or torch.multiprocessing would start it
        overrides = [*TINY, f"trainer.learning={learning}", *(["trainer.detach_every=2"] if learning == "tbptt" else [])]
        run_dir = tmp_path / "run"
        codes = wait_all(spawn_ranks([*overrides, f"hydra.run.dir={run_dir}"], tmp_path))
        assert codes == [0, 0], log_text(tmp_path)
    assert_close(final_weights(run_dir), one_process_weights(overrides), WEIGHT_TOLERANCE)
    history = read_jsonl(run_dir / "metrics.jsonl")
    per_epoch = {"bptt": 40, "trace": 4, "tbptt": 8}[learning]  # global batches of 16 (8 per rank); tbptt: 2 chunks each
    assert [r["step"] for r in history] == [per_epoch, 2 * per_epoch]
    files = {p.name for p in run_dir.iterdir()}
    assert {"metrics.jsonl", "checkpoints", ".hydra", "train.log"} <= files
    assert not any("rank" in name for name in files)  # rank 1 wrote nothing of its own


def test_sigkill_mid_epoch_then_resume_auto_matches_an_uninterrupted_two_process_run(tmp_path, torchrun_bptt):
    args = LONG
    run_dir = tmp_path / "killed"
    ranks = spawn_ranks([*args, f"hydra.run.dir={run_dir}"], tmp_path, log="killed")
    wanted = run_dir / "checkpoints" / "step_00000010" / "manifest.json"  # mid-epoch 1 of 2 (40 batches each)
    end = time.monotonic() + 240
    while not wanted.is_file() and time.monotonic() < end and ranks[0].poll() is None:
        time.sleep(0.002)
    for process in ranks:
        process.send_signal(signal.SIGKILL)
    wait_all(ranks)
    assert wanted.is_file(), log_text(tmp_path, "killed")
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert "step_00000080" not in steps, "the run ended before the kill; nothing was tested"
    resumed = spawn_ranks([*args, f"hydra.run.dir={run_dir}", "trainer.resume=auto"], tmp_path, log="resumed")
    assert wait_all(resumed) == [0, 0], log_text(tmp_path, "resumed")
    assert "resumed from" in (tmp_path / "resumed.0.log").read_text()
    a, b = final_weights(torchrun_bptt), final_weights(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # exact: same world size, same order
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("samples_per_s", "epoch_seconds")} for r in h]  # noqa: E731
    assert strip(read_jsonl(run_dir / "metrics.jsonl")) == strip(read_jsonl(torchrun_bptt / "metrics.jsonl"))


def test_nan_on_rank_1_only_is_skipped_on_both_ranks(tmp_path):
    args = [*TINY, *POISON, "+data.poison_batch=2", "trainer.nan_policy=skip", f"hydra.run.dir={tmp_path / 'run'}"]
    assert wait_all(spawn_ranks(args, tmp_path), timeout=180) == [0, 0], log_text(tmp_path)
    history = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["skipped_batches"] for r in history] == [1, 0]
    assert [r["step"] for r in history] == [3, 7]  # the poisoned batch made no step on either rank
    assert all(torch.isfinite(w).all() for w in final_weights(tmp_path / "run").values())


def test_nan_on_rank_1_only_stops_both_ranks_with_exit_code_2(tmp_path):
    args = [*TINY, *POISON, "+data.poison_batch=1", f"hydra.run.dir={tmp_path / 'run'}"]
    codes = wait_all(spawn_ranks(args, tmp_path), timeout=180)  # a hang would end here, killed, with a failure
    text = log_text(tmp_path)
    assert codes == [2, 2], text
    rank0, rank1 = (tmp_path / "ranks.0.log").read_text(), (tmp_path / "ranks.1.log").read_text()
    assert "tt-train: error: non-finite loss on another rank at training step 2 (epoch 1, batch 2)" in rank0
    assert "tt-train (rank 1): error: non-finite loss (nan) on rank 1 at training step 2 (epoch 1, batch 2)" in rank1
    assert "first non-finite output" in rank1


def test_sigterm_on_rank_1_stops_both_ranks_at_the_same_batch_with_a_checkpoint(tmp_path):
    args = [*TINY, "trainer.limit_train_batches=400", "trainer.epochs=1", "trainer.checkpoint_every=50",
            f"hydra.run.dir={tmp_path / 'run'}"]
    ranks = spawn_ranks(args, tmp_path)
    first = tmp_path / "run" / "checkpoints" / "step_00000050" / "manifest.json"  # the loop is running
    end = time.monotonic() + 240
    while not first.is_file() and time.monotonic() < end and ranks[0].poll() is None:
        time.sleep(0.005)
    ranks[1].send_signal(signal.SIGTERM)  # one rank only, as a node-local kill would
    assert wait_all(ranks, timeout=180) == [143, 143], log_text(tmp_path)
    last = max((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert last.name != "step_00000400", "the run ended before the signal; nothing was tested"
    assert f"interrupted; checkpoint written to {last}" in (tmp_path / "ranks.0.log").read_text(), log_text(tmp_path)
    assert "interrupted" not in (tmp_path / "ranks.1.log").read_text()  # rank 1 prints nothing


def test_a_two_process_checkpoint_resumes_on_one_process_with_the_same_batches(tmp_path, torchrun_bptt, caplog):
    config = compose_config(LONG).to_dict()
    middle = torchrun_bptt / "checkpoints" / "step_00000010"  # mid-epoch 1, written by rank 0 of 2
    config["trainer"].update(run_dir=str(tmp_path / "one"), resume=str(middle), loggers=[])
    with caplog.at_level("WARNING", logger="tracetorch.training"):
        trainer = Trainer(config)
    assert "resumed a 2-process checkpoint on 1 processes" in caplog.text
    assert (trainer.epoch, trainer.batch, trainer.global_step) == (0, 10, 10)
    trainer.fit()
    weights = {k: v.detach() for k, v in trainer.model.state_dict().items()}
    assert_close(weights, final_weights(torchrun_bptt), WEIGHT_TOLERANCE)  # the same run, sums in another order
    keys = ("epoch", "step", "train_accuracy", "test_accuracy")  # global metrics carried over and continued
    assert [{k: r[k] for k in keys} for r in trainer.history] == [{k: r[k] for k in keys}
                                                                    for r in read_jsonl(torchrun_bptt / "metrics.jsonl")]
