"""The trainer's components: one source of defaults, pluggable learning rules, experiment loggers."""

from __future__ import annotations

import inspect
import sys
from importlib import resources

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from train_support import make_snn, run_cli

from tracetorch.data import Splits, load_dataset
from tracetorch.training import Trainer
from tracetorch.training.callbacks import MissingExtraError
from tracetorch.training.config import TrainConfig, default_model, schema_defaults
from tracetorch.training.rules import LearningRule, get_rule, register_rule, rule_names

GROUPS = ("data", "encoder", "model", "trainer", "optim")
CHOICES = [(group, p.stem) for group in GROUPS for p in sorted(resources.files("tracetorch.configs").joinpath(group).iterdir())
           if p.name.endswith(".yaml") and p.stem != "file"]


def hydra_config(overrides: list[str]) -> dict:
    with initialize_config_module(config_module="tracetorch.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return TrainConfig.from_any(cfg).to_dict()


DEFAULT_CHOICES = {"data": "digits", "encoder": "rate", "model": "mlp", "trainer": "default", "optim": "adamw"}


def group_file(group: str, choice: str) -> dict:
    return yaml.safe_load(resources.files("tracetorch.configs").joinpath(group, f"{choice}.yaml").read_text()) or {}


@pytest.mark.parametrize(("group", "choice"), CHOICES)
def test_every_group_choice_resolves_the_same_through_hydra_and_from_python(group, choice):
    sections = {g: group_file(g, choice if g == group else c) for g, c in DEFAULT_CHOICES.items()}
    plain = OmegaConf.to_container(OmegaConf.merge(schema_defaults(), sections), resolve=True)  # what Hydra merges onto
    assert hydra_config([f"{group}={choice}"]) == TrainConfig.from_any(plain).to_dict()


def test_bare_defaults_agree_and_model_configs_carry_no_data_shape():
    bare = TrainConfig.from_any({}).to_dict()
    assert {k: v for k, v in hydra_config([]).items() if k != "data"} == {k: v for k, v in bare.items() if k != "data"}
    assert hydra_config([])["data"] == {**bare["data"], **group_file("data", "digits")}
    assert TrainConfig.from_any({}).model == default_model()
    for choice in [c for g, c in CHOICES if g == "model"]:
        assert "input_shape" not in yaml.safe_load(resources.files("tracetorch.configs").joinpath("model", f"{choice}.yaml")
                                                   .read_text())


def test_dataset_options_in_the_data_configs_are_the_dataset_functions_defaults():
    from tracetorch.data.datasets import DATASETS

    for choice in [c for g, c in CHOICES if g == "data"]:
        config = yaml.safe_load(resources.files("tracetorch.configs").joinpath("data", f"{choice}.yaml").read_text())
        params = inspect.signature(DATASETS.get(config["name"])).parameters
        for key, value in config.items():
            if key in params and not isinstance(value, str):
                assert params[key].default == value or key in ("download", "num_train", "num_test"), (choice, key)


def test_trainer_from_python_with_no_model_trains_the_default_mlp(tmp_path):
    trainer = Trainer({"trainer": {"epochs": 1, "limit_train_batches": 1, "limit_test_batches": 1, "loggers": []},
                       "encoder": {"num_steps": 3}})
    assert trainer.config.data.batch_size == 32 and trainer.config.optim.weight_decay == 0.01
    assert trainer.scheduler is not None and trainer.model.spec_name == "mlp"
    trainer.fit()


def tiny_digits() -> Splits:
    full = load_dataset({"name": "digits"})
    return Splits.from_tensors((full.train.x[:64], full.train.y[:64]), (full.test.x[:32], full.test.y[:32]), num_classes=10)


def test_a_rule_registered_from_outside_is_selectable_and_listed():
    @register_rule("toy-sign")
    class ToySign(LearningRule):
        pass

    assert "toy-sign" in rule_names() and get_rule("toy-sign") is ToySign
    with pytest.raises(ValueError, match=r"learning rule 'toy-sign' is already registered"):
        register_rule("toy-sign")(type("Other", (LearningRule,), {}))
    with pytest.raises(ValueError, match=r"trainer.update_every applies to learning=trace only \(got learning=toy-sign\)"):
        TrainConfig.from_any({"trainer": {"learning": "toy-sign", "update_every": 2}})


def test_a_rule_from_another_module_trains_through_tt_train(tmp_path):
    done = run_cli(["tracetorch.cli.train", "trainer.learning=toy_rule:HalfLoss", "trainer.epochs=1",
                    "trainer.limit_train_batches=2", "trainer.limit_test_batches=1", "encoder.num_steps=3",
                    "trainer.plots=false", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "learning toy_rule:HalfLoss" in done.stdout
    metrics = [yaml.safe_load(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 2


def test_tensorboard_logger_writes_what_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = Trainer({"trainer": {"epochs": 2, "run_dir": str(tmp_path), "loggers": ["tensorboard"], "plots": False,
                                   "checkpoint": False}, "encoder": {"num_steps": 3}},
                      model=make_snn([1, 8, 8], 10, hidden=8), splits=tiny_digits())
    trainer.fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train_loss")]
    assert losses == [(r["epoch"], pytest.approx(r["train_loss"])) for r in trainer.history]
    assert [e.value for e in events.Scalars("test_accuracy")] == pytest.approx([r["test_accuracy"] for r in trainer.history])


def test_mlflow_logger_writes_a_run_mlflows_client_reads(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    trainer = Trainer({"trainer": {"epochs": 2, "run_dir": str(tmp_path / "run"), "loggers": ["mlflow"], "plots": False,
                                   "checkpoint": False}, "encoder": {"num_steps": 3}, "optim": {"lr": 0.01}},
                      model=make_snn([1, 8, 8], 10, hidden=8), splits=tiny_digits())
    trainer.fit()
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tracetorch").experiment_id])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["train_loss"])) for r in trainer.history]
    assert run.data.params["optim.lr"] == "0.01" and run.info.status == "FINISHED"


@pytest.mark.parametrize(("logger", "extra"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_missing_logger_package_names_the_extra(tmp_path, monkeypatch, logger, extra):
    monkeypatch.setitem(sys.modules, extra, None)
    with pytest.raises(MissingExtraError, match=rf'trainer.loggers={logger} needs the {extra!r} package: pip install '
                                                rf'"tracetorch\[{extra}\]"'):
        Trainer({"trainer": {"run_dir": str(tmp_path), "loggers": [logger]}}, model=make_snn([1, 8, 8], 10),
                splits=tiny_digits())
