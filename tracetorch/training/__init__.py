"""Training: the engine (:func:`train`, :class:`Trainer`), readouts, checkpoints, metrics and plots."""

from tracetorch.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tracetorch.training.config import TrainConfig
from tracetorch.training.engine import Interrupted, Trainer, build_model, evaluate_checkpoint, train
from tracetorch.training.readout import get_readout

__all__ = [
    "CheckpointError", "Interrupted", "TrainConfig", "Trainer", "build_model", "evaluate_checkpoint", "get_readout",
    "load_checkpoint", "save_checkpoint", "train",
]
