"""``trainer.learning=bptt|tbptt|trace``: config resolution and errors, trace training, exactness vs BPTT."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn
from train_support import make_snn

import tracetorch as tt
from tracetorch.data import Splits, load_dataset
from tracetorch.online import TraceLinear
from tracetorch.training import TrainConfig, Trainer


def tiny_digits() -> Splits:
    full = load_dataset({"name": "digits"})
    return Splits.from_tensors((full.train.x[:64], full.train.y[:64]), (full.test.x[:40], full.test.y[:40]), num_classes=10)


def config(**trainer) -> dict:
    return {
        "seed": 1,
        "data": {"batch_size": 16, "eval_batch_size": 20},
        "encoder": {"name": "rate", "num_steps": 6},
        "optim": {"name": "sgd", "lr": 0.5},
        "trainer": {"epochs": 1, "device": "cpu", "checkpoint": False, "plots": False, "progress": False, **trainer},
    }


@pytest.mark.parametrize(
    ("trainer", "learning"),
    [({}, "bptt"), ({"detach_every": 3}, "tbptt"), ({"learning": "trace"}, "trace"),
     ({"learning": "trace", "update_every": 2}, "trace")],
)
def test_learning_is_resolved(trainer, learning):
    assert TrainConfig.from_any({"trainer": trainer}).trainer.learning == learning


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"learning": "bptt", "detach_every": 2}, "trainer.detach_every is the truncation window of learning=tbptt, not bptt"),
        ({"learning": "tbptt"}, r"trainer.learning=tbptt needs trainer.detach_every"),
        ({"learning": "trace", "detach_every": 1}, "learning=trace detaches every step; set trainer.update_every"),
        ({"update_every": 2}, r"trainer.update_every applies to learning=trace only \(got learning=bptt\)"),
        ({"learning": "rtrl"},
         r"trainer.learning: Value error, unknown learning rule 'rtrl' \(known: bptt, reflect, tbptt, (.*, )?trace"),
    ],
)
def test_learning_errors(trainer, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_any({"trainer": trainer})


@pytest.mark.parametrize(("update_every", "updates_per_batch"), [(None, 1), (4, 2)])
def test_trace_training_wraps_the_model_and_updates_every_k_steps(update_every, updates_per_batch):
    torch.manual_seed(0)
    trainer = Trainer(config(learning="trace", update_every=update_every), model=make_snn([1, 8, 8], 10, hidden=24),
                      splits=tiny_digits())
    assert [type(m) for m in trainer.model][1:3] == [TraceLinear, tt.snn.LIB]
    before = trainer.model[1].weight.detach().clone()
    record = trainer.train_epoch()
    assert trainer.global_step == 4 * updates_per_batch  # 64 samples / 16 per batch, 6 steps each
    assert not torch.equal(before, trainer.model[1].weight) and record["train_loss"] > 0
    assert "1.trace" in trainer.model.save_states()  # traces are states: checkpointed with the others


def test_trace_learning_equals_bptt_for_linear_into_li():
    """Linear -> LI with a scalar decay: the trace gradient is the exact BPTT gradient, so one epoch matches."""
    results = []
    for learning in ("bptt", "trace"):
        torch.manual_seed(0)
        model = tt.Sequential(nn.Flatten(), nn.Linear(64, 10), tt.snn.LI(10, beta=0.8, beta_rank=0, learn_beta=False))
        trainer = Trainer(config(learning=learning, readout="per_step", grad_clip=None), model=model, splits=tiny_digits())
        trainer.train_epoch()
        results.append([p.detach().clone() for p in trainer.model.parameters()])
    for bptt, trace in zip(*results):
        torch.testing.assert_close(trace, bptt, rtol=1e-5, atol=1e-6)


def test_trainer_trace_preset_composes():
    with initialize_config_module(config_module="tracetorch.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer=trace", "trainer.update_every=5"])
    trainer = TrainConfig.from_any(cfg).trainer
    assert (trainer.learning, trainer.update_every, trainer.detach_every) == ("trace", 5, None)
