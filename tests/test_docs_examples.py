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
EXTRAS = {"plot_reflect.py": ("gymnasium",), "plot_nir.py": ("nir", "h5py")}  # modules of an optional extra ([rl], [nir])


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
    for module in EXTRAS.get(path.name, ()):
        pytest.importorskip(module)
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


def readme_block(*markers: str) -> str:
    """The one Python block of the README holding every marker (a block that changes past recognition fails here)."""
    found = [code for code in blocks(README, "python") if all(m in code for m in markers)]
    assert len(found) == 1, f"{len(found)} README Python blocks hold {markers}"
    return found[0]


@pytest.fixture
def reader(quiet_run, monkeypatch):
    """What a reader of the README has at hand: the first block's model and optimizer, the files it names, a stream."""
    from torch import nn

    import tracetorch as tt

    first: dict = {}
    exec(compile(readme_block("tt.Sequential(", "for step in range("), "README.md", "exec"), first)
    first["model"].zero_states()  # later blocks start new sequences with it
    shutil.copytree(ROOT / "configs", quiet_run / "configs")
    (quiet_run / "my_model.yaml").write_text(next(b for b in blocks(README, "yaml") if "layers:" in b))
    monkeypatch.setattr(training, "Trainer", ShortTrainer)
    stream = [(torch.rand(32, 64), torch.randint(0, 10, (32,))) for _ in range(3)]  # the first block's batch size
    my_model = tt.Sequential(nn.Flatten(), nn.Linear(64, 10), tt.snn.LI(10))
    yield {"torch": torch, "nn": nn, "tt": tt, "model": first["model"], "optimizer": first["optimizer"],
           "stream": stream, "my_model": my_model}
    if "MyLayer" in tt.builder.registered_names():
        tt.builder.unregister("MyLayer")


def test_readme_model_file_block_runs(reader):
    exec(compile(readme_block('tt.build_model("configs/model/mlp.yaml"'), "README.md", "exec"), reader)
    assert reader["spec"].entries()[2][0] == "LIB" and "MyLayer" in reader["tt"].builder.registered_names()


def test_readme_trainer_block_runs(reader, quiet_run):
    exec(compile(readme_block("from tracetorch.training import Trainer"), "README.md", "exec"), reader)
    assert reader["summary"]["epochs"] == 2 and (quiet_run / "runs" / "py" / "metrics.jsonl").exists()


def test_readme_online_block_runs(reader):
    exec(compile(readme_block("enable_trace_learning(model)", "OnlineLearner("), "README.md", "exec"), reader)
    assert reader["learner"].steps == len(reader["stream"])


def test_readme_model_files_validate():
    import yaml

    import tracetorch as tt

    files = [text for text in blocks(README, "yaml") if text.lstrip().startswith(("input_shape:", "layers:"))]
    assert files
    for text in files:
        assert tt.build_model(tt.load_spec(yaml.safe_load(text))) is not None


def readme_commands(program: str) -> list[list[str]]:
    commands = []
    for block in blocks(README, "bash"):
        for line in block.replace("\\\n", " ").splitlines():  # continuation lines joined
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
        if any(re.search(r"=([^=]*\.(nir|ya?ml)|[\w.]+:\w+)$", a) for a in args):  # a file or code only the reader has
            continue
        multirun = "-m" in args
        check_overrides([a for a in args if a != "-m"], multirun=multirun)


def importlib_missing(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        return True
