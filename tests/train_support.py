"""Shared helpers for the tt-train tests: tiny models and a Hydra compose/subprocess harness.

Until the YAML model builder (``tracetorch.build_model`` + ``configs/model/*.yaml``) is in this
checkout, ``model_config_dir`` writes stand-in model configs that use ``model.factory``.
"""

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
HAS_BUILDER = hasattr(tt, "build_model") and (REPO / "configs" / "model" / "mlp.yaml").is_file()


def make_snn(input_shape: list[int], num_classes: int, hidden: int = 32, name: str | None = None,
             layers: list | None = None) -> tt.Sequential:
    """Flatten -> Linear -> LIB -> Linear -> LI: the smallest useful spiking classifier (``layers`` is ignored)."""
    features = math.prod(input_shape)
    return tt.Sequential(nn.Flatten(), nn.Linear(features, hidden), tt.snn.LIB(hidden), nn.Linear(hidden, num_classes),
                         tt.snn.LI(num_classes))


def model_config_dir(tmp: Path) -> Path:
    """A config dir with stand-in ``model/{mlp,conv,recurrent,lits}.yaml`` (factory-based)."""
    (tmp / "model").mkdir(parents=True, exist_ok=True)
    for name in ("mlp", "conv", "recurrent", "lits"):
        (tmp / "model" / f"{name}.yaml").write_text(f"name: {name}\nfactory: train_support:make_snn\nhidden: 16\n")
    return tmp


def searchpath_overrides(tmp: Path) -> list[str]:
    """Hydra overrides that make ``model=mlp`` etc. resolvable in this checkout."""
    if HAS_BUILDER:
        return []
    return [f"hydra.searchpath=[file://{model_config_dir(tmp)}]"]


def env_with_support() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH", "")) if p)
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m tracetorch.cli.<name>`` in a subprocess (the console scripts call the same main)."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env or env_with_support(), capture_output=True,
                          text=True, timeout=timeout)
