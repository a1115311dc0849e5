"""The documentation's code runs: the tutorials, the concept pages' examples and the README's blocks."""

from __future__ import annotations

import re
import runpy
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from tracetorch import training

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
SLOW_TUTORIALS = {"plot_tt_train.py"}  # runs tt-train three times in fresh processes


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


@pytest.fixture
def quiet_run(monkeypatch, tmp_path):
    """Reference kernels (no C++ build), a non-interactive plot backend, a scratch working dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("TRACETORCH_KERNELS", "reference")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    yield tmp_path
    plt.close("all")


TUTORIALS = sorted((DOCS / "tutorials").glob("plot_*.py"))


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.name in SLOW_TUTORIALS else []) for p in TUTORIALS]
)
def test_tutorial_runs(path, quiet_run):
    runpy.run_path(str(path), run_name="__main__")  # each tutorial asserts its own results


def test_every_tutorial_has_a_title_and_a_place_in_the_reading_order():
    order = runpy.run_path(str(DOCS / "_ext" / "tt_gallery.py"))["ORDER"]
    assert sorted(order) == [p.name for p in TUTORIALS]
    for path in TUTORIALS:
        doc = path.read_text().split('"""')[1].strip().splitlines()
        assert len(doc) >= 2 and set(doc[1]) == {"="} and len(doc[1]) >= len(doc[0]), path.name


PAGES = sorted(p for p in DOCS.rglob("*.md")
               if not {"_build", "_generated"} & set(p.parts) and blocks(p.read_text(), "python"))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(page, quiet_run):
    scope: dict = {}
    for code in blocks(page.read_text(), "python"):
        exec(compile(code, str(page), "exec"), scope)


class ShortTrainer(training.Trainer):
    """The README's Trainer with its epochs cut to a few batches (the test checks that the code runs, not accuracy)."""

    def __init__(self, config, *args, **kwargs):
        config = {**config, "trainer": {**config.get("trainer", {}), "limit_train_batches": 3, "limit_test_batches": 1,
                                        "progress": False}}
        super().__init__(config, *args, **kwargs)


def test_readme_python_blocks_run(quiet_run, monkeypatch):
    """Every Python block of the README, in order, with the few names it leaves to the reader defined."""
    from torch import nn

    import tracetorch as tt

    shutil.copytree(ROOT / "configs", quiet_run / "configs")
    model_files = blocks(README, "yaml")
    (quiet_run / "my_model.yaml").write_text(model_files[0])  # the model file shown just above the block using it
    my_model = tt.Sequential(nn.Flatten(), nn.Linear(64, 10), tt.snn.LI(10))
    stream = [(torch.rand(32, 64), torch.randint(0, 10, (32,))) for _ in range(3)]  # the batch of the first block
    python = blocks(README, "python")
    assert len(python) >= 4
    first: dict = {}
    exec(compile(python[0], "README.md", "exec"), first)  # the first model: also checked in test_readme.py
    first["model"].zero_states()  # later blocks start new sequences with it
    monkeypatch.setattr(training, "Trainer", ShortTrainer)
    results: dict = {}
    try:
        for code in python[1:]:  # later blocks use the first block's model and optimizer, and names left to the reader
            scope = {"torch": torch, "nn": nn, "tt": tt, "model": first["model"], "optimizer": first["optimizer"],
                     "my_model": my_model, "stream": stream}
            exec(compile(code, "README.md", "exec"), scope)
            results.update({k: v for k, v in scope.items() if k in ("summary", "spec", "learner")})
    finally:
        if "MyLayer" in tt.builder.registered_names():
            tt.builder.unregister("MyLayer")
    assert results["learner"].steps == len(stream)
    scope = results
    assert scope["summary"]["epochs"] == 2 and (quiet_run / "runs" / "py" / "metrics.jsonl").exists()
    assert scope["spec"].entries()[2][0] == "LIB"


def test_readme_model_files_validate():
    import yaml

    import tracetorch as tt

    for text in blocks(README, "yaml"):
        spec = tt.load_spec(yaml.safe_load(text))
        assert tt.build_model(spec) is not None


def readme_commands(program: str) -> list[list[str]]:
    commands = []
    for block in blocks(README, "bash"):
        for line in block.splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                words = shlex.split(part)
                if words and words[0] == program:
                    commands.append(words[1:])
    return commands


def test_readme_tt_train_commands_compose():
    """Every ``tt-train`` line of the README is a valid override list (checked as tt-train checks it)."""
    from tracetorch.cli.config import check_overrides

    commands = readme_commands("tt-train")
    assert len(commands) >= 8
    for args in commands:
        if "+sweep=optuna" in args and importlib_missing("hydra_plugins.hydra_optuna_sweeper"):
            continue
        multirun = "-m" in args
        check_overrides([a for a in args if a != "-m"], multirun=multirun)


def importlib_missing(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        return True
