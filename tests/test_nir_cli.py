"""tt-export (spec and checkpoint), tt-validate --nir, and training a .nir model (model=nir's factory)."""

from __future__ import annotations

import pathlib
import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("nir")
pytest.importorskip("h5py")

from tracetorch.cli import export, validate  # noqa: E402

import tracetorch as tt  # noqa: E402
from tracetorch.nir import NIRResetWarning, from_nir, to_nir, write  # noqa: E402

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "model"
SPEC = {"input_shape": [1, 8, 8], "layers": [
    {"Flatten": {}}, {"Linear": {"out_features": 16}}, {"LIB": {"beta": 0.8, "quant_fn": "round_ste"}},
    {"Linear": {"out_features": 10}}, {"LI": {}}]}


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch):
    monkeypatch.setenv("TRACETORCH_KERNELS", "reference")
    warnings.simplefilter("ignore", NIRResetWarning)


def _same_outputs(a: tt.Model, b: tt.Model, shape=(1, 8, 8)) -> None:
    x = torch.rand(30, 2, *shape)
    a.zero_states()
    b.zero_states()
    with torch.no_grad():
        assert torch.equal(a.run(x), b.run(x))


def test_tt_export_a_spec_file(tmp_path, capsys):
    out = tmp_path / "mlp.nir"
    assert export.main([str(CONFIGS / "mlp.yaml"), "-o", str(out), "--approximate", "--dt", "1e-3",
                        "--input-shape", "1,28,28"]) == 0
    assert "wrote" in capsys.readouterr().out
    model = from_nir(out)
    assert [type(m).__name__ for m in model.layers().values()] == ["LIB", "LIB", "LI"]
    with pytest.raises(SystemExit) as status:
        export.main([str(CONFIGS / "conv.yaml"), "-o", str(tmp_path / "conv.nir"), "--input-shape", "1,28,28"])
    assert status.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tt-export: error: cannot export to NIR (5 layers):") and "MaxPool2d" in err
    assert not (tmp_path / "conv.nir").exists()


def test_tt_export_a_checkpoint_equals_the_trained_model(tmp_path, capsys):
    from tracetorch.training.checkpoint import capture_rng, save_checkpoint
    from tracetorch.training.metrics import Meter

    state = {"progress": {"epoch": 1, "batch": 0, "global_step": 1}, "meter": Meter().to_dict(), "history": [],
             "optimizer": {}, "scheduler": None, "scaler": None, "rng": capture_rng()}
    torch.manual_seed(0)
    model = tt.build_model(SPEC)
    config = {"data": {"name": "digits"}, "model": {k: v for k, v in SPEC.items() if k != "input_shape"}}
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000001", model=model, trainer_state=state, config=config)
    out = tmp_path / "ckpt.nir"
    assert export.main(["--checkpoint", str(ckpt), "-o", str(out)]) == 0
    _same_outputs(model, from_nir(out))
    recorded = {"data": {"name": "not-loaded"}, "model": SPEC}  # a config that records the built spec: no dataset needed
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000002", model=model, trainer_state=state, config=recorded)
    assert export.main(["--checkpoint", str(ckpt), "-o", str(out)]) == 0
    _same_outputs(model, from_nir(out))
    capsys.readouterr()
    with pytest.raises(SystemExit) as status:
        export.main(["--checkpoint", str(tmp_path / "nowhere"), "-o", str(out)])
    assert status.value.code == 2
    assert capsys.readouterr().err == f"tt-export: error: {tmp_path / 'nowhere'}: no such checkpoint directory\n"


def test_tt_validate_nir_says_per_layer(capsys, tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("COLUMNS", "200")  # rich wraps the column titles on a narrow terminal

    spec = yaml.safe_load((CONFIGS / "recurrent.yaml").read_text())
    spec["input_shape"] = [1, 28, 28]
    path = tmp_path / "recurrent.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert validate.main(["--nir", str(path)]) == 0
    text = capsys.readouterr().out
    assert "NIR export" in text and "approximate" in text and "exact" in text


def test_a_nir_file_trains_here(tmp_path):
    """model=nir: the factory configs/model/nir.yaml names builds the model from the file; training updates it."""
    import yaml

    from tracetorch.data import Splits, load_dataset
    from tracetorch.training import Trainer

    torch.manual_seed(0)
    source = tt.Sequential(nn.Flatten(), nn.Linear(64, 16), tt.snn.LIB(16, quant_fn=tt.functional.round_ste()),
                           nn.Linear(16, 10), tt.snn.LI(10))
    path = write(to_nir(source, input_shape=(1, 8, 8)), tmp_path / "net.nir")
    model_cfg = yaml.safe_load(open(CONFIGS / "nir.yaml"))
    model_cfg["path"] = str(path)
    full = load_dataset({"name": "digits"})
    splits = Splits.from_tensors((full.train.x[:64], full.train.y[:64]), (full.test.x[:32], full.test.y[:32]), num_classes=10)
    trainer = Trainer({"seed": 0, "model": model_cfg, "data": {"batch_size": 16}, "encoder": {"name": "rate", "num_steps": 5},
                       "trainer": {"epochs": 1, "device": "cpu", "run_dir": str(tmp_path / "run"), "plots": False,
                                   "progress": False}}, splits=splits)
    before = trainer.model.module("1_linear").weight.detach().clone()
    trainer.fit()
    assert not torch.equal(before, trainer.model.module("1_linear").weight)
