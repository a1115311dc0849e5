"""Kill tolerance: tt-train SIGKILLed again and again (also mid-checkpoint) and resumed ends exactly like a clean run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_support import env_with_support

from tracetorch.training import load_checkpoint
from tracetorch.training.metrics import read_jsonl

TIMING = ("samples_per_s", "epoch_seconds")
SMALL = ["experiment=clicks_recurrent", "data.num_train=192", "data.num_test=64", "data.num_steps=8", "data.batch_size=16",
         "model.layers.0.Linear.out_features=8", "trainer.epochs=3", "trainer.limit_train_batches=8",
         "trainer.checkpoint_every=1", "trainer.plots=false", "trainer.progress=false"]  # 24 steps, no dataset files


def tt_train(args: list[str], run_dir: Path) -> subprocess.Popen:
    script = Path(sys.executable).with_name("tt-train")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "tracetorch.cli.train"]
    log = open(run_dir.parent / f"{run_dir.name}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([*command, *args, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent, env=env_with_support(),
                            stdout=log, stderr=log)


def complete_steps(run_dir: Path) -> set[str]:
    folder = run_dir / "checkpoints"
    return {p.name for p in folder.glob("step_*") if (p / "manifest.json").is_file()} if folder.is_dir() else set()


def partial_of(run_dir: Path, pid: int) -> bool:
    folder = run_dir / "checkpoints"
    try:
        return any(entry.name.endswith(f".partial-{pid}") for entry in os.scandir(folder))
    except FileNotFoundError:
        return False


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def wait_for(condition, process: subprocess.Popen, timeout: float, poll: float = 0.001) -> bool:
    """Poll ``condition`` until true (True), or the process ended / time ran out (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if condition():
            return True
        time.sleep(poll)
    return False


def latest_step(run_dir: Path) -> int:
    return max((int(name.split("_")[1]) for name in complete_steps(run_dir)), default=0)


def kill_and_resume(run_dir: Path, args: list[str], total_steps: int, kills: int, during_writes: int, seed: int) -> dict:
    """SIGKILL ``tt-train`` ``kills`` times at moments spread over the run (at least ``during_writes`` of them while a
    checkpoint is being written), each time restarting it with ``trainer.resume=auto``; then let it finish."""
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(1, total_steps - 3), kills))  # kill soon after these steps are checkpointed
    done = {"kills": 0, "during_write": 0, "starts": 0, "targets": targets}
    while True:
        resume = ["trainer.resume=auto"] if complete_steps(run_dir) else []
        process = tt_train([*args, *resume], run_dir)
        done["starts"] += 1
        if done["kills"] >= kills and done["during_write"] >= during_writes:
            assert process.wait(timeout=300) == 0, (run_dir.parent / f"{run_dir.name}.log").read_text()[-3000:]
            return done
        target = targets[min(done["kills"], kills - 1)]
        kills_left, writes_left = kills - done["kills"], during_writes - done["during_write"]
        if writes_left > 0 and (kills_left <= writes_left or done["starts"] % 2 == 0):
            # the moment this process starts writing a checkpoint past the target step
            hit = wait_for(lambda pid=process.pid, t=target: latest_step(run_dir) >= t and partial_of(run_dir, pid),
                           process, timeout=120)
        else:  # a random moment shortly after the target step was checkpointed
            hit = wait_for(lambda t=target: latest_step(run_dir) >= t, process, timeout=120, poll=0.005)
            if hit:
                time.sleep(rng.uniform(0.0, 0.05))
        if process.poll() is not None:
            assert process.returncode == 0, (run_dir.parent / f"{run_dir.name}.log").read_text()[-3000:]
            pytest.fail(f"the run finished before {kills} kills ({done}); make it longer")
        assert hit, "tt-train made no progress within 120 s"
        kill(process)
        done["kills"] += 1
        done["during_write"] += partial_of(run_dir, process.pid)  # its partial checkpoint is still there: killed mid-write


def assert_same_run(killed: Path, clean: Path) -> None:
    steps = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert steps == sorted(p.name for p in (clean / "checkpoints").iterdir())  # no partial or hidden leftovers
    for name in steps:  # every checkpoint on disk loads and equals the clean run's at the same step
        a, b = load_checkpoint(killed / "checkpoints" / name), load_checkpoint(clean / "checkpoints" / name)
        assert a.weights.keys() == b.weights.keys()
        for key in a.weights:
            assert torch.equal(a.weights[key], b.weights[key]), (name, key)
        assert a.manifest["global_step"] == b.manifest["global_step"]
    strip = lambda records: [{k: v for k, v in r.items() if k not in TIMING} for r in records]  # noqa: E731
    assert strip(read_jsonl(killed / "metrics.jsonl")) == strip(read_jsonl(clean / "metrics.jsonl"))
    assert not list(killed.glob(".*.tmp")) and not list(killed.glob(".write-test-*"))


def run_kill_test(tmp_path: Path, args: list[str], total_steps: int, kills: int, during_writes: int, seed: int) -> dict:
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    clean = tt_train(args, clean_dir)  # the reference run, in parallel with the killing
    counts = kill_and_resume(killed_dir, args, total_steps, kills=kills, during_writes=during_writes, seed=seed)
    assert clean.wait(timeout=300) == 0, (tmp_path / "clean.log").read_text()[-3000:]
    assert_same_run(killed_dir, clean_dir)
    records = read_jsonl(killed_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[-1]["test_accuracy"] is not None
    return counts


def test_sigkill_at_random_moments_then_resume_auto_matches_a_clean_run(tmp_path):
    counts = run_kill_test(tmp_path, SMALL, 24, kills=10, during_writes=3, seed=0)
    assert counts["kills"] >= 10 and counts["during_write"] >= 3
    print(json.dumps(counts))


@pytest.mark.slow
def test_sigkill_many_times_online_learning(tmp_path):
    args = [*SMALL, "trainer.detach_every=2", "trainer.keep_checkpoints=5"]
    counts = run_kill_test(tmp_path, args, 96, kills=25, during_writes=8, seed=1)
    assert counts["kills"] >= 25
