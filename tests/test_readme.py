"""The README's quick start stays true: its commands exist and its first example runs."""

import re
from pathlib import Path

import pytest
import torch

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_block(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()


def test_quick_start_installs_as_ci_does_and_runs_the_main_job():
    install = bash_block("Install and run the main job")
    assert install.endswith('pip install -e ".[dev]" && tt-train')
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tt-train"] == "tracetorch.cli.train:main"
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[dev]"' in ci
    assert bash_block("Run the tests:") in ci


def test_first_model_example_trains():
    code = re.search(r"## A first model\n\n```python\n(.*?)```", README, re.S).group(1)
    scope: dict = {}
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), scope)
    model = scope["model"]
    assert scope["step"] == 4
    assert torch.isfinite(scope["loss"])
    assert all(p.grad is not None for p in model.parameters())
