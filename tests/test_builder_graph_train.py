"""tt-train trains graph models from configs/model (the trainer gets them through build_model), every learning rule."""

from __future__ import annotations

import json

import pytest
from train_support import run_cli

QUICK = ["trainer.epochs=1", "trainer.limit_train_batches=3", "data.batch_size=16", "encoder.num_steps=4",
         "trainer.progress=false"]


def _train(tmp_path, *overrides: str) -> dict:
    run_dir = tmp_path / "run"
    done = run_cli(["tracetorch.cli.train", *QUICK, *overrides, f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 1 and records[0]["step"] >= 3
    return records[0]


def test_tt_train_a_recurrent_graph_then_tt_eval(tmp_path) -> None:
    record = _train(tmp_path, "model=recurrent_graph")
    evaluated = run_cli(["tracetorch.cli.eval", str(tmp_path / "run" / "checkpoints" / "step_00000003"), "--json"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(record["test_accuracy"])


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [["model=two_branch", "trainer=trace"], ["model=two_branch", "trainer.detach_every=2"],
                                       ["model=sew_resnet18", "+model.nodes.layer4.Stage.stride=1"]],
                         ids=["trace", "tbptt", "sew_resnet18"])
def test_tt_train_graph_models_with_each_learning_rule(tmp_path, overrides) -> None:
    """sew_resnet18 on 8x8 digits: layer4 keeps 2x2 (stride 1), since the trainer's one-sample probe runs BatchNorm in
    training mode, which cannot normalise a single value per channel (1x1 maps)."""
    _train(tmp_path, *overrides)
