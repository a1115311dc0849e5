"""Built-in datasets and ``load_dataset(config)``.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download),
  split into train/test with a stratified split; images ``[1, 8, 8]`` in ``[0, 1]``.
* ``mnist`` / ``fashion_mnist``: through torchvision from ``root`` (downloaded there
  when ``download`` is true); images ``[1, 28, 28]``.
* ``poisson_clicks``: the clicks accumulation task (:mod:`tracetorch.data.clicks`), a
  sequence dataset ``[T, 2]`` generated from a seed.

Your own: decorate a function returning :class:`Splits` with ``@register_dataset("name")``
and use ``data.name=name``, or name it in config as ``data.factory=mypkg.mod:make``;
every other key of the data config is passed to it as a keyword argument.

Example:
    >>> from tracetorch.data.datasets import load_dataset
    >>> splits = load_dataset({"name": "digits"})
    >>> len(splits.train), len(splits.test), splits.input_shape, splits.num_classes
    (1437, 360, (1, 8, 8), 10)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tracetorch.data.clicks import poisson_clicks
from tracetorch.data.registry import Registry, call_with_checked_kwargs, import_callable
from tracetorch.data.splits import Splits

__all__ = ["DATASETS", "register_dataset", "load_dataset", "DATA_KEYS", "DatasetMissingError"]

DATASETS = Registry("dataset")
register_dataset = DATASETS.register

#: keys of the data config that belong to the trainer, not to the dataset function
DATA_KEYS = ("name", "factory", "batch_size", "eval_batch_size")


class DatasetMissingError(FileNotFoundError):
    """Dataset files are not under the configured root and cannot be downloaded."""


@register_dataset("digits")
def digits(test_size: float = 0.2, split_seed: int = 0) -> Splits:
    """scikit-learn's 8x8 digits, stratified train/test split, intensities scaled to ``[0, 1]``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise ValueError(f"digits: test_size must be in (0, 1), got {test_size}")
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_size, stratify=y.numpy(), random_state=split_seed
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return Splits.from_tensors((x[train_idx], y[train_idx]), (x[test_idx], y[test_idx]), num_classes=10, name="digits")


def _torchvision(cls_name: str, root: str, download: bool, train_subset: int | None) -> Splits:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    root_path = Path(root).expanduser()
    parts = []
    for train in (True, False):
        try:
            ds = cls(root=str(root_path), train=train, download=bool(download))
        except RuntimeError as err:
            if "download" in str(err).lower() and download:
                raise DatasetMissingError(
                    f"{cls_name}: download into data.root={str(root_path)!r} failed ({' '.join(str(err).split())[:200]}); "
                    f"without network, put the files in {root_path / cls_name / 'raw'} and set data.download=false"
                ) from None
            if "not found" not in str(err).lower():
                raise
            raise DatasetMissingError(
                f"{cls_name} files not found under data.root={str(root_path)!r} (looked for {root_path / cls_name / 'raw'}); "
                f"set data.root to the folder holding {cls_name}/raw, or data.download=true to fetch them"
            ) from None
        except OSError as err:  # URLError and friends: download failed
            raise DatasetMissingError(
                f"{cls_name}: download into data.root={str(root_path)!r} failed ({err}); without network, put the files "
                f"in {root_path / cls_name / 'raw'} and set data.download=false"
            ) from None
        parts.append((ds.data.unsqueeze(1).clone(), torch.as_tensor(ds.targets).long()))
    (x_train, y_train), test = parts
    if train_subset is not None:
        if train_subset < 1:
            raise ValueError(f"{cls_name}: train_subset must be >= 1 or null, got {train_subset}")
        x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    return Splits.from_tensors((x_train, y_train), test, num_classes=10, scale=1 / 255, name=cls_name.lower())


@register_dataset("mnist")
def mnist(root: str = "data", download: bool = True, train_subset: int | None = None) -> Splits:
    """MNIST through torchvision (``root/MNIST/raw``); ``train_subset`` keeps the first N training images."""
    return _torchvision("MNIST", root, download, train_subset)


@register_dataset("fashion_mnist")
def fashion_mnist(root: str = "data", download: bool = True, train_subset: int | None = None) -> Splits:
    """Fashion-MNIST through torchvision (``root/FashionMNIST/raw``)."""
    return _torchvision("FashionMNIST", root, download, train_subset)


@register_dataset("poisson_clicks")
def clicks(
    num_train: int = 4000,
    num_test: int = 1000,
    num_steps: int = 100,
    dt: float = 0.01,
    high_rate: float = 25.0,
    low_rate: float = 15.0,
    split_seed: int = 0,
) -> Splits:
    """Poisson clicks trials as ``[N, num_steps, 2]`` sequences; train and test use different seeds."""
    kwargs = dict(num_steps=num_steps, dt=dt, high_rate=high_rate, low_rate=low_rate)
    train = poisson_clicks(num_train, seed=2 * split_seed, **kwargs)
    test = poisson_clicks(num_test, seed=2 * split_seed + 1, **kwargs)
    return Splits.from_tensors(train, test, num_classes=2, sequence=True, name="poisson_clicks")


def load_dataset(config: dict[str, Any]) -> Splits:
    """Build the dataset a data config names (``name`` from the registry, or ``factory``)."""
    config = dict(config)
    factory = config.get("factory")
    name = config.get("name")
    kwargs = {k: v for k, v in config.items() if k not in DATA_KEYS}
    if factory:
        fn = import_callable(factory)
        splits = call_with_checked_kwargs(fn, kwargs, f"dataset factory {factory!r}")
        label = factory
    elif name:
        splits = DATASETS.call(name, kwargs)
        label = name
    else:
        raise ValueError("data config needs 'name' (one of: " + ", ".join(DATASETS.names()) + ") or 'factory' ('pkg.mod:fn')")
    if not isinstance(splits, Splits):
        raise TypeError(f"dataset {label!r} returned {type(splits).__name__}; it must return tracetorch.data.Splits")
    return splits
