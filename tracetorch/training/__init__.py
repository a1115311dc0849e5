"""Training: the loop (:class:`Trainer`, :func:`train`), learning rules, checkpoints, loggers, plots.

The modules, one concern each: ``config`` (the schema, every default), ``setup`` (seed,
device, model, optimizer, schedule), ``rules/`` (bptt, tbptt, trace, your own), ``step``
(backward, clipping, AMP scaler, NaN policy), ``loop`` (fit, epochs, evaluation),
``callbacks`` (metric sinks: jsonl, console, TensorBoard, MLflow), ``checkpoint`` (the
file format), ``resume`` (continue, evaluate, :func:`load_trained`), ``rundir`` (lock,
unique names, write errors), ``faults``, ``metrics``, ``readout``, ``plots``, ``sweep``.
"""

from tracetorch.training.callbacks import Callback
from tracetorch.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tracetorch.training.config import TrainConfig
from tracetorch.training.loop import Interrupted, Trainer, train
from tracetorch.training.readout import get_readout
from tracetorch.training.resume import evaluate_checkpoint, load_trained
from tracetorch.training.rules import LearningRule, register_rule

__all__ = [
    "Callback", "CheckpointError", "Interrupted", "LearningRule", "TrainConfig", "Trainer", "evaluate_checkpoint",
    "get_readout", "load_checkpoint", "load_trained", "register_rule", "save_checkpoint", "train",
]
