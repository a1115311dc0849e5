"""REFLECT through tt-train: episodes, metrics, checkpoints, exact resume, greedy tt-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_support import run_cli

from tracetorch.training.checkpoint import latest_checkpoint, load_checkpoint

pytest.importorskip("gymnasium")

QUICK = ["experiment=cartpole_reflect", "trainer.checkpoint_every=4", "trainer.plots=false", "rl.eval_episodes=3"]


def train(tmp_path: Path, run: str, *args: str):
    done = run_cli(["tracetorch.cli.train", *QUICK, f"hydra.run.dir={tmp_path / run}", *args], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_reflect_trains_by_episodes_and_resumes_exactly(tmp_path):
    train(tmp_path, "full", "rl.episodes=8")
    train(tmp_path, "split", "rl.episodes=4")
    resumed = train(tmp_path, "split", "rl.episodes=8", "trainer.resume=auto")
    assert "resumed from" in resumed.stdout and "(episode 4)" in resumed.stdout
    full, split = (load_checkpoint(latest_checkpoint(tmp_path / r)) for r in ("full", "split"))
    assert full.manifest["epoch"] == split.manifest["epoch"] == 8
    for name, value in full.weights.items():
        assert torch.equal(value, split.weights[name]), name
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in records] == list(range(1, 9))
    assert records == [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["return"] == r["length"] for r in records)  # CartPole: +1 per step survived


def test_tt_eval_runs_greedy_episodes(tmp_path):
    train(tmp_path, "run", "rl.episodes=4")
    done = run_cli(["tracetorch.cli.eval", str(tmp_path / "run"), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["episodes"] == 3 and result["mean_return"] >= 1


def test_reflect_without_an_rl_section_is_one_clear_error(tmp_path):
    done = run_cli(["tracetorch.cli.train", "trainer.learning=reflect", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    assert done.returncode == 2
    assert "trainer.learning=reflect needs an rl section" in done.stderr and done.stderr.count("\n") == 1


def test_an_unknown_environment_is_one_clear_error(tmp_path):
    done = run_cli(["tracetorch.cli.train", *QUICK, "rl.env.id=CartPol-v1", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("tt-train: error: ") and "CartPol-v1" in done.stderr and done.stderr.count("\n") == 1
