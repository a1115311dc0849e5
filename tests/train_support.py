"""Shared helpers for the tt-train tests: a tiny model and a subprocess harness."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from torch import nn

import tracetorch as tt

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def make_snn(input_shape: list[int], num_classes: int, hidden: int = 32) -> tt.Sequential:
    """Flatten -> Linear -> LIB -> Linear -> LI: the smallest useful spiking classifier."""
    features = math.prod(input_shape)
    return tt.Sequential(nn.Flatten(), nn.Linear(features, hidden), tt.snn.LIB(hidden), nn.Linear(hidden, num_classes),
                         tt.snn.LI(num_classes))


def env_with_support() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH", "")) if p)
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m tracetorch.cli.<name>`` in a subprocess (the console scripts call the same main)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env or env_with_support(), capture_output=True,
                          text=True, timeout=timeout)
