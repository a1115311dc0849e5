"""Numerical faults (NaN/inf) and a run dir that cannot be written: clear errors, last good checkpoint kept."""

from __future__ import annotations

import errno
import hashlib
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_support import env_with_support, make_snn

from tracetorch.data import Splits
from tracetorch.training import Trainer, load_checkpoint
from tracetorch.training.checkpoint import latest_checkpoint
from tracetorch.training.faults import NonFiniteError, RunDirError


def tiny_splits(poison_sample: int | None = None) -> Splits:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 1, 4, 4, generator=gen), torch.randint(0, 3, (96,), generator=gen)
    if poison_sample is not None:
        x[poison_sample, 0, 1, 2] = float("nan")
    return Splits.from_tensors((x, y), (x[:24], y[:24]), num_classes=3)


def make_trainer(run_dir: Path, splits: Splits, **trainer) -> Trainer:
    torch.manual_seed(0)
    config = {
        "seed": 1,
        "data": {"batch_size": 16, "eval_batch_size": 24},
        "encoder": {"name": "direct", "num_steps": 4},
        "optim": {"name": "adam", "lr": 1e-2},
        "trainer": {"epochs": 1, "device": "cpu", "run_dir": str(run_dir), "plots": False, "progress": False, **trainer},
    }
    return Trainer(config, model=make_snn([1, 4, 4], 3, hidden=12), splits=splits)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_nan_in_a_layer_stops_with_step_layer_and_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, tiny_splits(), checkpoint_every=1)
    original = trainer.train_batch

    def train_batch(x, y):  # before the 4th batch, a parameter of the LIB layer turns NaN
        if trainer.batch == 3:
            with torch.no_grad():
                trainer.model[2].raw_beta[5] = float("nan")
        return original(x, y)

    trainer.train_batch = train_batch
    good = tmp_path / "checkpoints" / "step_00000003"
    with pytest.raises(NonFiniteError, match=re.escape(
        "non-finite loss (nan) at training step 4 (epoch 1, batch 4); first non-finite output: layer '2' "
        "(LIB(num_neurons=12, dim=-1), output shape [16, 12]) at timestep 0; its parameters raw_beta hold non-finite "
        f"values. Training stopped before applying it; the last good checkpoint is {good}. Lower optim.lr, set "
        "trainer.grad_clip, or set trainer.nan_policy=skip to skip such batches"
    )):
        trainer.fit()
    assert trainer.global_step == 3 and latest_checkpoint(tmp_path) == good
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000001", "step_00000002", "step_00000003"]
    assert all(torch.isfinite(w).all() for w in load_checkpoint(good).weights.values())


@pytest.mark.parametrize("learning", [{}, {"learning": "trace"}])
def test_nan_input_stops_naming_the_input(tmp_path, learning):
    trainer = make_trainer(tmp_path, tiny_splits(poison_sample=int(torch.randperm(96)[0])), **learning)
    with pytest.raises(NonFiniteError, match=r"^non-finite loss \(nan\) at training step \d+ \(epoch 1, batch \d+\); first "
                       r"non-finite output: the input itself holds non-finite values \(first at timestep 0\)\. Training "
                       r"stopped before applying it; no checkpoint was written yet\."):
        trainer.fit()


@pytest.mark.parametrize(("learning", "steps_per_batch"), [({}, 1), ({"detach_every": 2}, 2), ({"learning": "trace"}, 1)])
def test_nan_policy_skip_drops_the_batch_and_trains_on(tmp_path, learning, steps_per_batch):
    splits = tiny_splits(poison_sample=7)
    trainer = make_trainer(tmp_path, splits, nan_policy="skip", checkpoint=False, **learning)
    trainer.fit()
    record = trainer.history[-1]
    assert record["skipped_batches"] == 1
    assert trainer.global_step == 5 * steps_per_batch  # 6 batches, one skipped before any optimizer step
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert record["train_loss"] == pytest.approx(record["train_loss"]) and record["test_accuracy"] is not None


class InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_non_finite_gradient_stops_before_the_optimizer_step(tmp_path):
    trainer = make_trainer(tmp_path, tiny_splits(), grad_clip=None)
    trainer.model[1].register_forward_hook(lambda _m, _i, out: InfGrad.apply(out))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(NonFiniteError, match=r"^non-finite gradient norm \((inf|nan)\) at training step 1 \(epoch 1, batch 1\); "
                       r"non-finite gradients in 1\.weight, 1\.bias\. Training stopped before applying it"):
        trainer.fit()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, tiny_splits(), checkpoint_every=2)
    from tracetorch.training import checkpoint as module

    real, calls = module.write_state_file, []

    def full_disk(path, states):  # the 2nd checkpoint runs out of space on its third file
        calls.append(path)
        if len(calls) == 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, states)

    monkeypatch.setattr(module, "write_state_file", full_disk)
    first = tmp_path / "checkpoints" / "step_00000002"
    with pytest.raises(RunDirError) as info:
        trainer.fit()
    assert re.fullmatch(
        rf"cannot write {re.escape(str(calls[-1]))}: No space left on device \(errno 28\); training stopped at step 4; "
        rf"the last complete checkpoint {re.escape(str(first))} is intact\. Free space or choose another trainer\.run_dir, "
        r"then continue with trainer\.resume=<checkpoint dir>", str(info.value))
    assert ".step_00000004.partial-" in str(calls[-1])
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]  # the partial one is gone
    load_checkpoint(first)


def test_unwritable_run_dir_fails_before_training(tmp_path, monkeypatch):
    real_write_bytes = Path.write_bytes

    def read_only(self, data):
        if self.name.startswith(".write-test-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(RunDirError, match=rf"^cannot write {re.escape(str(tmp_path))}/\.write-test-\d+: Permission denied "
                       r"\(errno 13\); training stopped at step 0; no checkpoint was written yet\."):
        make_trainer(tmp_path, tiny_splits())


def _file_size_quota(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_tt_train_under_a_file_size_quota_exits_2_and_keeps_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "tracetorch.cli.train", "experiment=clicks_recurrent", "data.num_train=64", "data.num_test=32",
            "data.num_steps=5", "data.batch_size=16", "model.layers.0.Linear.out_features=512", "trainer.plots=false",
            "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    first = subprocess.run([*args, "trainer.epochs=1"], cwd=tmp_path, env=env_with_support(), capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    checkpoint = run_dir / "checkpoints" / "step_00000004"
    before = tree_digest(checkpoint)
    hydra_files = max(p.stat().st_size for p in (run_dir / ".hydra").iterdir())
    weights = (checkpoint / "model.safetensors").stat().st_size
    limit = (hydra_files + weights) // 2  # room for Hydra's files and the metrics, not for the weights
    assert hydra_files + 300 < limit < weights
    second = subprocess.run([*args, "trainer.epochs=2", "trainer.resume=auto"], cwd=tmp_path, env=env_with_support(),
                            capture_output=True, text=True, timeout=300, preexec_fn=_file_size_quota(limit))
    assert second.returncode == 2, second.stderr[-2000:]
    message = second.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"tt-train: error: cannot write \S+/checkpoints/\.step_00000008\.partial-\d+/model\.safetensors: "
                        rf"File too large \(errno 27\); training stopped at step 8; the last complete checkpoint "
                        rf"{re.escape(str(checkpoint))} is intact\. .*", message), message
    assert tree_digest(checkpoint) == before
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_00000004"]
