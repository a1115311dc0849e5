"""Sweeps through Hydra's launcher plugins (joblib: parallel jobs on one machine; submitit_local: SLURM's launcher run
locally): 4 jobs, and summary.csv with 4 rows written at the end as with the basic launcher."""

from __future__ import annotations

import csv
import os

import pytest
from train_support import env_with_support, run_cli

SWEEP = ["-m", "encoder.num_steps=3", "model.layers.1.Linear.out_features=16", "model.layers.3.Linear.out_features=16",
         "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.limit_test_batches=1", "data.eval_batch_size=64",
         "trainer.plots=false", "trainer.progress=false", "trainer.device=cpu", "optim.lr=1e-3,2e-3", "seed=0,1"]


def sweep(tmp_path, launcher: list[str]) -> list[dict[str, str]]:
    env = {**env_with_support(), "TRACETORCH_KERNELS": "reference", "OMP_NUM_THREADS": "1"}
    done = run_cli(["tracetorch.cli.train", *SWEEP, *launcher, f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path, env=env,
                   timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "sweep" / "summary.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["params"] for r in rows) == [f"optim.lr={lr} seed={s}" for lr in ("0.001", "0.002") for s in (0, 1)]
    assert all(r["status"] == "ok" and float(r["best_test_accuracy"]) >= 0 for r in rows)
    return rows


def test_joblib_launcher_runs_4_jobs_on_2_workers_and_writes_the_summary(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    rows = sweep(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert len(rows) == 4 and all(os.path.isfile(os.path.join(r["run_dir"], "metrics.jsonl")) for r in rows)


def test_submitit_local_launcher_runs_4_jobs_and_writes_the_summary(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    rows = sweep(tmp_path, ["hydra/launcher=submitit_local"])
    assert len(rows) == 4
    assert (tmp_path / "sweep" / ".submitit").is_dir()  # the jobs went through submitit


def test_slurm_launcher_preset_composes_one_gpu_per_task():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    with initialize_config_module("tracetorch.configs", version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes, launcher.partition) == (1, 1, 1, "gpu")
