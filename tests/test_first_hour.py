"""A new user's first hour: their own model file, a checkpoint that rebuilds its model, clean errors and output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from train_support import env_with_support, run_cli

import tracetorch as tt
from tracetorch.training import load_checkpoint
from tracetorch.training.checkpoint import latest_checkpoint

QUICK = ["trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.limit_test_batches=1", "encoder.num_steps=3",
         "trainer.plots=false"]
NET = """# my own net for 8x8 digits
layers:
  - Flatten: {}
  - Linear: {out_features: 16}
  - LIB: {quant_fn: round_ste}
  - Linear: {out_features: 10}
  - LI: {}
"""


def train(tmp_path: Path, *args: str) -> object:
    return run_cli(["tracetorch.cli.train", *QUICK, *args], tmp_path)


@pytest.fixture(scope="module")
def own_model_run(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("own")
    (tmp_path / "my_net.yaml").write_text(NET)
    done = train(tmp_path, "model=my_net.yaml", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp_path


def test_a_model_file_path_trains_and_the_checkpoint_records_what_was_built(own_model_run):
    ckpt = load_checkpoint(latest_checkpoint(own_model_run / "run"))
    layers = ckpt.config["model"]["layers"]
    assert layers[1] == {"Linear": {"in_features": 64, "out_features": 16}}
    assert ckpt.config["model"]["input_shape"] == [1, 8, 8] and "file" not in ckpt.config["model"]


def test_load_trained_gives_the_trained_model_for_inference(own_model_run):
    model = tt.load_trained(own_model_run / "run")
    weights = load_checkpoint(latest_checkpoint(own_model_run / "run")).weights
    assert not model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    model.zero_states()
    assert model.run(torch.rand(3, 2, 1, 8, 8)).shape == (3, 2, 10)


def test_tt_eval_takes_a_run_folder_and_explains_other_folders(own_model_run, tmp_path):
    done = run_cli(["tracetorch.cli.eval", str(own_model_run / "run"), "--json"], own_model_run)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["checkpoint"] == str(latest_checkpoint(own_model_run / "run")) and result["split"] == "test"
    done = run_cli(["tracetorch.cli.eval", str(tmp_path)], tmp_path)
    assert done.returncode == 2
    assert done.stderr == (f"tt-eval: error: {tmp_path}: neither a checkpoint (a step_* folder with manifest.json) nor a run "
                           f"dir (a folder with checkpoints/ inside)\n")


def test_resume_says_where_it_resumed_and_that_the_run_is_complete(own_model_run):
    done = train(own_model_run, "model=my_net.yaml", f"hydra.run.dir={own_model_run / 'run'}", "trainer.resume=auto")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {latest_checkpoint(own_model_run / 'run')} (epoch 1, batch 0, step 2)" in done.stdout
    assert "the run is already complete (1 of 1 epochs)" in done.stdout


def test_output_off_a_terminal_is_one_plain_line_per_epoch_and_the_log_has_it(own_model_run):
    done = train(own_model_run, "model=my_net.yaml", f"hydra.run.dir={own_model_run / 'plain'}")
    assert done.returncode == 0, done.stderr[-2000:]
    epoch_lines = [line for line in done.stdout.splitlines() if line.startswith("epoch 1: train loss ")]
    assert len(epoch_lines) == 1 and not re.search(r"\w+\.py:\d+", done.stdout)
    assert "best_test_accuracy" in done.stdout and "…" not in done.stdout
    assert epoch_lines[0] in (own_model_run / "plain" / "train.log").read_text()


@pytest.mark.parametrize(("files", "args", "message"), [
    ({"bad.yaml": "layers:\n  - Linear: {out_features: 3\n  - LI: {}\n"}, ["model=bad.yaml"],
     r"tt-train: error: \S+/bad.yaml:3: <spec>: YAML syntax error \(column 7\): while parsing a flow mapping: expected ',' or "
     r"'}', but got ':'"),
    ({}, ["model=missing.yaml"], r"tt-train: error: override 'model=missing.yaml': no such model file 'missing.yaml'"),
    ({}, ["trainer.epoch=3"], r"tt-train: error: override 'trainer.epoch=3': no such key \(did you mean trainer.epochs\?\)"),
    ({}, ["data.name=digitz"], r"tt-train: error: unknown dataset 'digitz'; did you mean 'digits'\?"),
])
def test_start_up_errors_are_one_line_and_leave_no_run_folder(tmp_path, files, args, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**env_with_support(), "TT_OUTPUT_DIR": str(tmp_path / "outputs")}
    done = run_cli(["tracetorch.cli.train", *QUICK, *args], tmp_path, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and re.match(message, done.stderr), done.stderr
    assert not list((tmp_path / "outputs").rglob("*.yaml")), "a failed start left a run folder behind"
