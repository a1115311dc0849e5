"""Datasets, encoders and the dataset registry used by tt-train."""

from __future__ import annotations

import pytest
import torch
from train_support import SHARED_DATA

from tracetorch.data import DatasetMissingError, Splits, load_dataset, make_encoder, poisson_clicks
from tracetorch.data.datasets import DATASETS


def test_digits_split_is_stratified_and_scaled():
    splits = load_dataset({"name": "digits", "test_size": 0.2})
    assert (len(splits.train), len(splits.test), splits.input_shape) == (1437, 360, (1, 8, 8))
    assert float(splits.train.x.max()) == 1.0 and float(splits.train.x.min()) == 0.0
    counts = torch.bincount(splits.test.y, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # ~36 per class


def test_rate_encoder_is_reproducible_and_unbiased():
    enc = make_encoder({"name": "rate", "num_steps": 2000})
    x = torch.tensor([[0.0, 0.25, 1.0]])
    a, b = enc(x, torch.Generator().manual_seed(1)), enc(x, torch.Generator().manual_seed(1))
    assert a.shape == (2000, 1, 3) and torch.equal(a, b)
    torch.testing.assert_close(a.mean(0), x, atol=0.03, rtol=0)


def test_direct_and_latency_encoders():
    x = torch.tensor([[0.2, 0.9]])
    assert torch.equal(make_encoder({"name": "direct", "num_steps": 3})(x), x.expand(3, 1, 2))
    spikes = make_encoder({"name": "latency", "num_steps": 11})(x)
    assert spikes.sum(0).tolist() == [[1.0, 1.0]]
    assert spikes[:, 0, 1].argmax().item() == 1 and spikes[:, 0, 0].argmax().item() == 8  # brighter fires earlier


def test_encoder_errors_name_the_problem():
    with pytest.raises(KeyError, match=r"unknown encoder 'rat'; did you mean 'rate'\?"):
        make_encoder({"name": "rat", "num_steps": 3})
    with pytest.raises(ValueError, match=r"encoder 'rate': unknown option\(s\) tau; accepted: x, num_steps, generator, gain"):
        make_encoder({"name": "rate", "num_steps": 3, "tau": 2.0})


def test_poisson_clicks_labels_and_seed():
    x, y = poisson_clicks(300, num_steps=100, high_rate=30, low_rate=10, seed=5)
    x2, y2 = poisson_clicks(300, num_steps=100, high_rate=30, low_rate=10, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    left, right = x.sum(1).unbind(-1)
    assert torch.equal(y, (right > left).long()) and not (left == right).any()
    assert abs(float(x.sum(1).mean()) / 100 / 0.01 - 20.0) < 1.0  # mean rate (30 + 10) / 2 Hz
    assert 0.4 < float(y.float().mean()) < 0.6
    splits = load_dataset({"name": "poisson_clicks", "num_train": 20, "num_test": 10, "num_steps": 30})
    assert splits.sequence and splits.input_shape == (2,) and splits.num_steps == 30
    batch, labels = splits.batch(splits.train, torch.arange(4))
    assert batch.shape == (30, 4, 2) and labels.shape == (4,)


def make_custom(size: int = 10) -> Splits:
    x = torch.rand(size, 3)
    return Splits.from_tensors((x, (x[:, 0] > 0.5).long()), (x[:4], (x[:4, 0] > 0.5).long()), num_classes=2)


def test_custom_dataset_factory_and_registry():
    splits = load_dataset({"factory": "test_train_data:make_custom", "size": 12, "batch_size": 4})
    assert len(splits.train) == 12 and splits.input_shape == (3,)
    with pytest.raises(ValueError, match=r"dataset factory 'test_train_data:make_custom': unknown option\(s\) sizes"):
        load_dataset({"factory": "test_train_data:make_custom", "sizes": 12})
    with pytest.raises(ValueError, match=r"module 'test_train_data' has no attribute 'nope'"):
        load_dataset({"factory": "test_train_data:nope"})
    DATASETS.register("tiny_custom", make_custom)
    assert len(load_dataset({"name": "tiny_custom", "size": 6}).train) == 6
    with pytest.raises(KeyError, match=r"unknown dataset 'mnsit'; did you mean 'mnist'"):
        load_dataset({"name": "mnsit"})


def test_missing_mnist_names_root_and_download_switch(tmp_path):
    with pytest.raises(DatasetMissingError, match=rf"MNIST files not found under data.root='{tmp_path}'.*data.download=true"):
        load_dataset({"name": "mnist", "root": str(tmp_path), "download": False})


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="shared/data/MNIST not present beside the repo")
def test_mnist_from_shared_data():
    splits = load_dataset({"name": "mnist", "root": str(SHARED_DATA), "download": False})
    assert (len(splits.train), len(splits.test), splits.input_shape) == (5000, 10000, (1, 28, 28))
    assert torch.bincount(splits.train.y).tolist() == [500] * 10
    x, y = splits.batch(splits.test, torch.arange(3))
    assert x.dtype == torch.float32 and 0.99 < float(x.max()) <= 1.0 and y.tolist() == [7, 2, 1]
