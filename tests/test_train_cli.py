"""tt-train / tt-eval end to end in subprocesses, multirun summaries and the installed wheel."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from train_support import REPO, env_with_support, run_cli

from tracetorch.kernels import cpu

QUICK = ["trainer.epochs=1", "trainer.limit_train_batches=4", "data.batch_size=32", "encoder.num_steps=5",
         "trainer.progress=false"]


def test_tt_train_digits_end_to_end_then_tt_eval(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli(["tracetorch.cli.train", *QUICK, f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Training summary" in done.stdout and "best_test_accuracy" in done.stdout
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 1 and records[0]["step"] == 4
    checkpoint = run_dir / "checkpoints" / "step_00000004"
    assert (checkpoint / "manifest.json").is_file() and (run_dir / "curves.png").is_file() and (run_dir / "raster.png").is_file()
    evaluated = run_cli(["tracetorch.cli.eval", str(checkpoint), "--json"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(evaluated.stdout)
    assert result["accuracy"] == pytest.approx(records[0]["test_accuracy"]) and result["samples"] == 360


def test_tt_train_bad_override_is_one_clear_line(tmp_path):
    done = run_cli(["tracetorch.cli.train", "trainer.epochs=0", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("tt-train: error: invalid training config: trainer.epochs:")
    missing = run_cli(["tracetorch.cli.eval", str(tmp_path / "nope")], tmp_path)
    assert missing.returncode == 2 and f"tt-eval: error: {tmp_path / 'nope'}: no such checkpoint directory" in missing.stderr


def test_multirun_writes_summary_csv(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(["tracetorch.cli.train", "-m", "optim.lr=1e-3,1e-2", *QUICK, "trainer.limit_train_batches=2",
                    "trainer.plots=false", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["params"] for r in rows] == ["optim.lr=0.001", "optim.lr=0.01"]
    assert all("trainer.epochs=1" in r["overrides"] for r in rows)
    assert all(r["status"] == "ok" and 0 <= float(r["best_test_accuracy"]) <= 1 for r in rows)
    assert "Sweep summary (2 runs)" in done.stdout


def test_installed_wheel_runs_from_another_directory(tmp_path):
    """Build the wheel, install it with --target (no deps), run tt-train from elsewhere: configs and CLI ship inside."""
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("tracetorch-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    env = env_with_support()
    env["PYTHONPATH"] = os.pathsep.join([str(target), env["PYTHONPATH"]])
    # its own kernel cache, left unbuilt (the reference kernels): the developer's cache is never touched
    env["TORCH_EXTENSIONS_DIR"], env["TRACETORCH_KERNELS"] = str(tmp_path / "torch_ext"), "reference"
    script = target / "bin" / "tt-train"
    shown = subprocess.run([str(script), "--help"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "data: digits, dvs_gesture, fashion_mnist, mnist, nmnist, poisson_clicks, shd, tonic" in shown.stdout
    where = subprocess.run([sys.executable, "-c", "import tracetorch; print(tracetorch.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(target))
    done = subprocess.run([str(script), *QUICK, "trainer.limit_train_batches=1", "trainer.plots=false",
                           "hydra.run.dir=run"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (elsewhere / "run" / "metrics.jsonl").is_file()
    assert not list((tmp_path / "torch_ext").glob("tracetorch_kernels_*"))
    # the installed copy of the kernel sources maps to the same cache entry as this checkout's: content, not path
    planned = subprocess.run([sys.executable, "-m", "tracetorch.kernels", "build", "--dry-run"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=120)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert f"key        {cpu.build_plan().key}\n" in planned.stdout
    assert f"directory  {tmp_path / 'torch_ext'}" in planned.stdout
