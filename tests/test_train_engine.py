"""The training engine: exact resume, online learning's bounded graph, readouts, checkpoints."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from torch import nn
from train_support import make_snn

import tracetorch as tt
from tracetorch.data import Splits
from tracetorch.training import CheckpointError, Trainer, load_checkpoint
from tracetorch.training.checkpoint import latest_checkpoint
from tracetorch.training.metrics import read_jsonl

TIMING = ("samples_per_s", "epoch_seconds")


def small_digits() -> Splits:
    from tracetorch.data import load_dataset

    full = load_dataset({"name": "digits"})
    return Splits.from_tensors((full.train.x[:96], full.train.y[:96]), (full.test.x[:40], full.test.y[:40]), num_classes=10)


def config(run_dir, **trainer) -> dict:
    return {
        "seed": 3,
        "data": {"batch_size": 16, "eval_batch_size": 20},
        "encoder": {"name": "rate", "num_steps": 6},
        "optim": {"name": "adamw", "lr": 1e-2, "scheduler": "cosine"},
        "trainer": {"epochs": 2, "device": "cpu", "run_dir": str(run_dir), "plots": False, "progress": False, **trainer},
    }


def make_trainer(run_dir, splits, **trainer) -> Trainer:
    torch.manual_seed(0)  # the model's own init; the trainer seeds everything else
    return Trainer(config(run_dir, **trainer), model=make_snn([1, 8, 8], 10, hidden=24), splits=splits)


def strip(history):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def test_resume_after_one_epoch_is_exact(tmp_path):
    splits = small_digits()
    full = make_trainer(tmp_path / "full", splits)
    full.fit()
    first = make_trainer(tmp_path / "split", splits)  # the same run, stopped after its first epoch
    first.train_epoch()
    first.save_checkpoint()
    first.close()  # one run dir, one writer: release it for the resumed trainer
    del first
    resumed = make_trainer(tmp_path / "split", splits, resume="auto")
    assert resumed.epoch == 1 and resumed.global_step == 6
    resumed.fit()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert strip(full.history) == strip(resumed.history)
    assert strip(read_jsonl(tmp_path / "full" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "split" / "metrics.jsonl"))
    assert full.history[-1]["test_accuracy"] > 0.2  # it learned something in 12 steps


def test_interrupt_mid_epoch_then_resume_is_exact(tmp_path):
    splits = small_digits()
    full = make_trainer(tmp_path / "full", splits, detach_every=2)
    full.fit()
    stopped = make_trainer(tmp_path / "cut", splits, detach_every=2)
    original = stopped.train_batch

    def train_batch_then_ctrl_c(x, y):  # a real Ctrl-C (SIGINT) arrives during the 8th batch
        out = original(x, y)
        if stopped.epoch == 1 and stopped.batch == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    stopped.train_batch = train_batch_then_ctrl_c
    with pytest.raises(tt.training.Interrupted) as info:
        stopped.fit()
    assert info.value.checkpoint.name == f"step_{stopped.global_step:08d}"
    assert load_checkpoint(info.value.checkpoint).manifest["batch"] == 2
    resumed = make_trainer(tmp_path / "cut", splits, detach_every=2, resume=str(info.value.checkpoint))
    resumed.fit()
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert strip(full.history) == strip(resumed.history)


def saved_bytes_peak(trainer: Trainer, x_seq, y) -> int:
    """The most bytes of tensors the autograd graph held at once during one training batch."""
    live = {"now": 0, "peak": 0}

    def pack(t):
        live["now"] += t.numel() * t.element_size()
        live["peak"] = max(live["peak"], live["now"])
        return t

    def unpack(t):
        return t

    original_apply = trainer.step.apply

    def apply(loss, replay):
        applied = original_apply(loss, replay)
        live["now"] = 0  # the graph is freed by backward
        return applied

    trainer.step.apply = apply
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        trainer.train_batch(x_seq, y)
    return live["peak"]


def test_detach_every_bounds_the_graph(tmp_path):
    splits = small_digits()
    x, y = splits.batch(splits.train, torch.arange(8))
    peaks = {}
    for k in (None, 1, 4):
        for steps in (8, 32):
            trainer = make_trainer(tmp_path / f"{k}-{steps}", splits, detach_every=k)
            peaks[k, steps] = saved_bytes_peak(trainer, torch.bernoulli(x.expand(steps, *x.shape)), y)
            trainer.close()
    assert peaks[None, 32] > 2 * peaks[None, 8]  # full BPTT: the graph grows with the sequence (weights are fixed)
    assert peaks[1, 32] == peaks[1, 8]  # online: constant
    assert peaks[4, 32] == peaks[4, 8] < peaks[None, 8]


@pytest.mark.parametrize("readout", ["mean", "per_step", "last"])
def test_one_chunk_equals_full_bptt(tmp_path, readout):
    splits = small_digits()
    a = make_trainer(tmp_path / "a", splits, readout=readout, epochs=1, checkpoint=False)
    b = make_trainer(tmp_path / "b", splits, readout=readout, epochs=1, checkpoint=False, detach_every=6)
    a.fit(), b.fit()
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert a.global_step == b.global_step == 6


def test_online_learning_steps_every_timestep(tmp_path):
    trainer = make_trainer(tmp_path, small_digits(), detach_every=1, epochs=1, checkpoint=False)
    trainer.fit()
    assert trainer.global_step == 6 * 6  # 6 batches x 6 steps


def test_checkpoint_contents_and_corruption(tmp_path):
    trainer = make_trainer(tmp_path, small_digits(), epochs=1)
    trainer.fit()
    path = latest_checkpoint(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "states.safetensors", "trainer.safetensors", "trainer.json",
                                      "config.yaml"}
    ckpt = load_checkpoint(path)
    assert set(ckpt.trainer["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert ckpt.trainer["optimizer"]["state"][0]["exp_avg"].shape == trainer.model[1].weight.shape
    assert {"2.mem", "4.mem"} <= set(ckpt.states) and ckpt.config["encoder"]["num_steps"] == 6
    blob = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(blob[:-3] + b"xyz")
    with pytest.raises(CheckpointError, match=r"file model.safetensors does not match its manifest entry"):
        load_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete checkpoint \(no manifest.json\)"):
        load_checkpoint(path)
    assert latest_checkpoint(tmp_path) is None


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path, caplog):
    with caplog.at_level("INFO", logger="tracetorch.training"):
        trainer = make_trainer(tmp_path, small_digits(), resume="auto")
    assert trainer.resumed_from is None and trainer.epoch == 0 and trainer.global_step == 0
    assert f"trainer.resume=auto: no checkpoint in {tmp_path} yet; starting a fresh run" in caplog.text


def test_model_output_must_match_classes(tmp_path):
    model = tt.Sequential(nn.Flatten(), nn.Linear(64, 7), tt.snn.LI(7))
    with pytest.raises(ValueError, match=r"outputs shape \[7\] per sample but dataset 'custom' has 10 classes"):
        Trainer(config(tmp_path), model=model, splits=small_digits())


def test_unknown_optimizer_option(tmp_path):
    cfg = config(tmp_path)
    cfg["optim"]["momentum"] = 0.9
    with pytest.raises(ValueError, match=r"optim.momentum: not an option of AdamW"):
        Trainer(cfg, model=make_snn([1, 8, 8], 10), splits=small_digits())


def test_plots_written(tmp_path):
    trainer = make_trainer(tmp_path, small_digits(), epochs=1, plots=True, checkpoint=False)
    trainer.fit()
    for name in ("curves.png", "raster.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_every_skips_test_epochs_but_not_the_last(tmp_path):
    trainer = make_trainer(tmp_path, small_digits(), epochs=3, eval_every=2, checkpoint=False)
    summary = trainer.fit()
    assert [r["test_accuracy"] is None for r in trainer.history] == [True, False, False]
    assert summary["best_epoch"] in (2, 3) and summary["test_accuracy"] == trainer.history[-1]["test_accuracy"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_training_step(tmp_path):
    trainer = make_trainer(tmp_path, small_digits(), device="auto", amp=True, epochs=1, checkpoint=False)
    assert trainer.device.type == "cuda" and trainer.amp_dtype in (torch.bfloat16, torch.float16)
    record = trainer.train_epoch()
    assert torch.isfinite(torch.tensor(record["train_loss"])) and trainer.global_step == 6
