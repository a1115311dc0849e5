"""Training metrics: running averages, the spike-rate monitor and ``metrics.jsonl``.

The spike rate of a model is ``sum |out| / numel`` over the outputs of its firing layers
(LIB, LIT, LITS families and their prefixes): the fraction of neurons firing per step
for binary spikes, the mean event magnitude for ternary or surrogate-valued outputs.
:class:`SpikeMonitor` counts outputs from both step calls (``layer(x_t)``) and whole
sequence calls (``layer.run(x_seq)``) without touching the layers' code.

Example:
    >>> import torch, tracetorch as tt
    >>> from tracetorch.training.metrics import SpikeMonitor
    >>> net = tt.Sequential(torch.nn.Linear(3, 4), tt.snn.LIB(4, quant_fn=tt.functional.round_ste()))
    >>> with SpikeMonitor(net) as monitor:
    ...     _ = net.run(torch.ones(5, 2, 3))
    >>> 0.0 <= monitor.rate() <= 1.0, monitor.numel
    (True, 40)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from tracetorch.core.model import iter_layers
from tracetorch.core.state_io import atomic_write

__all__ = ["firing_layers", "SpikeMonitor", "Meter", "write_jsonl", "read_jsonl"]


def firing_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``model`` that emit events (their class ``FLAGS.fires`` is true)."""
    return {path: layer for path, layer in iter_layers(model) if getattr(getattr(type(layer), "FLAGS", None), "fires", False)}


class SpikeMonitor:
    """Context manager summing ``|out|`` and element counts of every firing layer's outputs."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = list(firing_layers(model).values())
        self.total = 0.0
        self.numel = 0
        self._handles: list[Any] = []
        self._depth = 0

    def _count(self, out: Tensor) -> None:
        if self._depth == 0 and isinstance(out, Tensor):
            self.total += float(out.detach().abs().sum())
            self.numel += out.numel()

    def _wrap_run(self, layer: nn.Module):  # type: ignore[no-untyped-def]
        original = layer.run

        def run(x_seq: Tensor) -> Tensor:
            self._depth += 1
            try:
                out = original(x_seq)
            finally:
                self._depth -= 1
            self._count(out)
            return out

        return run

    def __enter__(self) -> SpikeMonitor:
        for layer in self.layers:
            self._handles.append(layer.register_forward_hook(lambda _m, _i, out: self._count(out)))
            object.__setattr__(layer, "run", self._wrap_run(layer))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        for layer in self.layers:
            layer.__dict__.pop("run", None)
        self._handles.clear()

    def rate(self) -> float:
        return self.total / self.numel if self.numel else 0.0

    def reset(self) -> None:
        self.total, self.numel = 0.0, 0


@dataclass
class Meter:
    """Sample-weighted running sums of loss and correct predictions, plus spike counts."""

    loss_sum: float = 0.0
    correct: int = 0
    samples: int = 0
    spike_total: float = 0.0
    spike_numel: int = 0
    seconds: float = 0.0
    skipped: int = 0  # batches dropped by trainer.nan_policy=skip
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, loss: float, correct: int, samples: int) -> None:
        self.loss_sum += loss * samples
        self.correct += correct
        self.samples += samples

    @property
    def loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else float("nan")

    @property
    def spike_rate(self) -> float:
        return self.spike_total / self.spike_numel if self.spike_numel else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        fields = ("loss_sum", "correct", "samples", "spike_total", "spike_numel", "seconds", "skipped")
        return {k: getattr(self, k) for k in fields}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Meter:
        fields = ("loss_sum", "correct", "samples", "spike_total", "spike_numel", "seconds")
        return cls(**{k: data[k] for k in fields}, skipped=int(data.get("skipped", 0)))


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` one JSON object per line, atomically (the file always matches a checkpoint)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")

    atomic_write(Path(path), write)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
