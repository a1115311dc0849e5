"""Every model file under configs/model builds, steps and runs whole sequences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import tracetorch as tt

CONFIGS = [p for p in sorted((Path(__file__).parents[1] / "configs" / "model").glob("*.yaml")) if "\nlayers:" in p.read_text()]
# chain specs; graph specs (nodes:) are tested in test_builder_graph*.py, file.yaml and nir.yaml name no layers
# Model configs carry no data shape (the trainer takes it from the data); these are the shapes of the data they are for.
SHAPES = {"mlp": [1, 8, 8], "nmnist_conv": [2, 34, 34], "dvs_gesture_conv": [2, 32, 32], "shd_recurrent": [700]}


def _shape(path: Path) -> list[int]:
    return SHAPES.get(path.stem, [1, 28, 28])


def test_the_four_example_files_exist() -> None:
    assert {p.name for p in CONFIGS} >= {"mlp.yaml", "conv.yaml", "recurrent.yaml", "lits.yaml"}


def _classes(path: Path) -> int:
    """The output size the file declares: the out_features of its last Linear."""
    return [layer["Linear"]["out_features"] for layer in yaml.safe_load(path.read_text())["layers"] if "Linear" in layer][-1]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_runs(path: Path) -> None:
    assert "input_shape" not in yaml.safe_load(path.read_text())
    declared = tuple(_shape(path))
    model = tt.build_model(path, input_shape=declared)
    assert isinstance(model, tt.Sequential) and isinstance(model, tt.Model)
    assert model.input_shape == declared
    x = torch.rand(3, 1, *declared)
    out = model.run(x)
    assert out.shape == (3, 1, _classes(path))
    model.zero_states()
    stepped = torch.stack([model(x_t) for x_t in x])
    torch.testing.assert_close(out, stepped)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_has_no_hard_coded_sizes(path: Path) -> None:
    """The trainer overrides input_shape; sizes must follow it (shape inference, not constants)."""
    text = path.read_text()
    for key in ("in_features", "in_channels", "num_neurons", "num_features"):
        assert key not in text
    spec = tt.load_spec(path).model_dump()
    spec["input_shape"] = [3, 32, 32]
    out = tt.build_model(spec)(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, _classes(path))


def test_dotted_overrides_reach_into_the_spec() -> None:
    """The files are plain documents: Hydra/OmegaConf overrides address layers by index and name."""
    from omegaconf import OmegaConf

    directory = Path(__file__).parents[1] / "configs" / "model"
    cfg = OmegaConf.create({"model": OmegaConf.load(directory / "recurrent.yaml")})
    cfg.merge_with_dotlist(["model.layers.2.RLIB.rec_weight.value=0.3", "model.layers.2.RLIB.beta=0.95",
                            "model.input_shape=[2,10]"])
    model = tt.build_model(cfg.model)
    rlib = list(model.children())[2]
    assert rlib.rec_weight.tolist() == pytest.approx([0.3] * 128)
    assert rlib.beta.tolist() == pytest.approx([0.95] * 128)
    assert list(model.children())[1].in_features == 20


def test_input_shape_keyword_overrides_the_file() -> None:
    model = tt.build_model(CONFIGS[0], input_shape=(3, 32, 32))
    assert model.input_shape == (3, 32, 32)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
