"""Helpers shared by the compiled-kernel tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

import tracetorch as tt
from tracetorch.functional import probabilistic_ste, round_ste, stochastic_round_ste
from tracetorch.snn.grammar import layer_names, param_specs, parse

QUANTS = {
    "identity": None,
    "round": lambda: round_ste(0.5),  # the kernels' blended quantizer
    "round_unit": lambda: round_ste(),  # step 1: the kernels' own instantiation
    "stochastic_round": lambda: stochastic_round_ste(),
    "probabilistic": lambda: probabilistic_ste(),
}
"""The quantizers the fused kernels cover, by the name the tests use."""


def make_layer(name: str, dim: int, rank: int, quant: str | None, seed: int = 0, num_neurons: int = 4) -> torch.nn.Module:
    """A layer with non-default, per-neuron (or shared) parameters and non-zero recurrent weights."""
    torch.manual_seed(seed)
    kwargs: dict = {"dim": dim, **{f"{spec.name}_rank": rank for spec in param_specs(parse(name))}}
    if quant is not None and QUANTS[quant] is not None:
        kwargs["quant_fn"] = QUANTS[quant]()
    layer = tt.snn.get_layer_class(name)(num_neurons, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.4 * torch.randn_like(p))
    return layer


def layer_cases() -> Iterator[tuple[str, str]]:
    """Every layer with every quantizer it takes (layers that do not fire: the identity only)."""
    for name in layer_names():
        for quant in QUANTS if parse(name).fires else ["identity"]:
            yield name, quant


def kernels_called(fn: Callable[[], object]) -> set[str]:
    """The names of the ``tracetorch_kernels`` ops that ``fn()`` runs, from ``torch.profiler``."""
    with torch.profiler.profile() as prof:
        fn()
    return {e.key.removeprefix("tracetorch_kernels::") for e in prof.key_averages() if "tracetorch_kernels" in e.key}
