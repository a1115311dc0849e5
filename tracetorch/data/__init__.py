"""Datasets (in-memory :class:`Splits`), the dataset registry and spike encoders."""

from tracetorch.data import events  # registers nmnist, shd, dvs_gesture and tonic (tonic is imported on use)
from tracetorch.data.clicks import poisson_clicks
from tracetorch.data.datasets import DATASETS, DatasetMissingError, load_dataset, register_dataset
from tracetorch.data.encoders import ENCODERS, Encoder, make_encoder
from tracetorch.data.splits import Part, Splits

__all__ = [
    "DATASETS", "DatasetMissingError", "ENCODERS", "Encoder", "Part", "Splits",
    "events", "load_dataset", "make_encoder", "poisson_clicks", "register_dataset",
]
