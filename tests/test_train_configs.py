"""Every shipped experiment config composes with Hydra's compose API and trains one tiny step on CPU."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from train_support import SHARED_DATA

from tracetorch.training import TrainConfig, Trainer

EXPERIMENTS = sorted(p.stem for p in resources.files("tracetorch.configs").joinpath("experiment").iterdir()
                     if p.name.endswith(".yaml") and "learning: reflect" not in p.read_text())  # episodes: test_train_reflect
TINY = [
    "trainer.epochs=1", "trainer.limit_train_batches=1", "trainer.limit_test_batches=1", "trainer.device=cpu",
    "trainer.checkpoint=false", "trainer.plots=false", "trainer.progress=false", "data.batch_size=4",
    "data.eval_batch_size=4",
]


def _compose(tmp_path: Path, overrides: list[str]):
    with initialize_config_module(config_module="tracetorch.configs", version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides])


def test_experiments_found():
    assert {"digits_mlp", "mnist_mlp", "mnist_conv", "clicks_recurrent", "digits_online"} <= set(EXPERIMENTS)


def test_bare_defaults_are_digits_rate_mlp(tmp_path):
    cfg = _compose(tmp_path, [])
    assert (cfg.data.name, cfg.encoder.name, cfg.model.name, cfg.trainer.detach_every) == ("digits", "rate", "mlp", None)
    TrainConfig.from_any(cfg)  # validates


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_steps(experiment, tmp_path):
    overrides = [f"experiment={experiment}", *TINY]
    cfg = _compose(tmp_path, overrides)
    if cfg.data.name in ("mnist", "fashion_mnist"):
        if not (SHARED_DATA / "MNIST" / "raw").is_dir() or cfg.data.name != "mnist":
            pytest.skip(f"{cfg.data.name} files not available offline")
        cfg = _compose(tmp_path, [*overrides, f"data.root={SHARED_DATA}", "data.download=false", "data.train_subset=8"])
    if cfg.data.name == "poisson_clicks":
        cfg = _compose(tmp_path, [*overrides, "data.num_train=8", "data.num_test=4", "data.num_steps=12"])
    if cfg.data.name in ("nmnist", "shd", "dvs_gesture"):  # event data: a few recordings in the dataset's own format
        pytest.importorskip("tonic")
        from tracetorch.data.event_files import write_synthetic

        write_synthetic(cfg.data.name, tmp_path, num_train=4, num_test=2, events_per_sample=100)
        cfg = _compose(tmp_path, [*overrides, f"data.root={tmp_path}", "data.download=false", "encoder.num_steps=6"])
    trainer = Trainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    record = trainer.train_epoch()
    assert trainer.global_step >= 1
    assert any(not (a == p).all() for a, p in zip(before, trainer.model.parameters())), "one step changed no weight"
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["train_loss"] > 0


def test_unknown_trainer_key_is_reported(tmp_path):
    cfg = _compose(tmp_path, ["+trainer.epoch=3"])
    with pytest.raises(ValueError, match=r"invalid training config: trainer\.epoch: Extra inputs are not permitted"):
        Trainer(cfg)


def test_container_round_trip(tmp_path):
    cfg = _compose(tmp_path, ["optim=sgd", "optim.scheduler=step"])
    config = TrainConfig.from_any(OmegaConf.to_container(cfg, resolve=True))
    assert (config.optim.name, config.optim.scheduler, config.optim.model_extra["momentum"]) == ("sgd", "step", 0.9)


def _has_optuna_sweeper() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(not _has_optuna_sweeper(), reason="hydra-optuna-sweeper not installed (pip install tracetorch[optuna])")
def test_optuna_sweep_config_composes(tmp_path):
    with initialize_config_module(config_module="tracetorch.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+sweep=optuna"],
                      return_hydra_config=True)
    assert "optuna" in cfg.hydra.sweeper._target_.lower()
    assert cfg.hydra.sweeper.direction == "maximize"
    assert set(cfg.hydra.sweeper.params) == {"optim.lr", "encoder.num_steps"}
