"""Every layer against an independent reference written straight from the layer reference, docs/layers.md.

The reference below uses nothing from :mod:`tracetorch`: a layer's structure is read from
the letters of its name and the maths is plain tensor code, one line per equation of the
reference (called "the spec" below). Each test builds a layer with random parameters (rank 0
and 1, both signs where the constraint allows), feeds it random inputs of both signs for 24 steps and compares the
output and every state after every step.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import tracetorch as tt

FAMILIES_LONGEST_FIRST = ("LIEMA", "LITS", "LIT", "LIB", "LI")
FIRING = ("LIB", "LIT", "LITS")


def split_name(name: str) -> tuple[bool, bool, bool, str]:
    """``(dual, synaptic, recurrent, family)`` from the letters of a layer name."""
    family = next(f for f in FAMILIES_LONGEST_FIRST if name.endswith(f))
    prefix = name[: len(name) - len(family)]
    return "D" in prefix, "S" in prefix, "R" in prefix, family


def expected_params(name: str) -> list[str]:
    """The parameter names the spec's table gives a layer, in table order."""
    dual, syn, rec, family = split_name(name)

    def split(p: str) -> list[str]:
        return [f"pos_{p}", f"neg_{p}"] if dual else [p]

    names: list[str] = []
    if syn:
        names += split("alpha")
    names += split("beta")
    if rec:
        names += split("gamma") + split("rec_weight")
    if family == "LIB":
        names.append("threshold")
    if family in ("LIT", "LITS"):
        names += ["pos_threshold", "neg_threshold"]
    if family in FIRING:
        names.append("bias")
    if family == "LITS":
        names += ["pos_scale", "neg_scale"]
    return names


def expected_states(name: str) -> set[str]:
    dual, syn, rec, _ = split_name(name)

    def split(s: str) -> set[str]:
        return {f"pos_{s}", f"neg_{s}"} if dual else {s}

    states = split("mem")
    if syn:
        states |= split("syn")
    if rec:
        states |= split("rec") | {"prev_output"}
    return states


def kind_of(param: str) -> str:
    """Which constraint class the spec gives a parameter: decay, threshold, bias, free."""
    core = param.removeprefix("pos_").removeprefix("neg_")
    if core in ("alpha", "beta", "gamma"):
        return "decay"
    if core == "threshold":
        return "threshold"
    if core == "bias":
        return "bias"
    return "free"  # rec_weight, scales


def random_value(param: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """A random value inside the spec's constraint, of both signs where allowed."""
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    n = torch.randn(shape, generator=gen, dtype=torch.float64)
    return {
        "decay": 0.05 + 0.9 * u,
        "threshold": 0.2 + 1.3 * u,
        "bias": 0.5 * n,
        "free": n,
    }[kind_of(param)]


def pos(v: Tensor) -> Tensor:
    return torch.where(v >= 0, v, torch.zeros_like(v))


def neg(v: Tensor) -> Tensor:
    return torch.where(v <= 0, v, torch.zeros_like(v))


def ref_identity(v: Tensor) -> Tensor:
    return v


def ref_round(v: Tensor) -> Tensor:
    return torch.round(v)


def ref_stochastic_round(v: Tensor) -> Tensor:
    low = torch.floor(v)
    return low + torch.bernoulli(v - low)


def ref_probabilistic(v: Tensor) -> Tensor:
    return v * torch.bernoulli(v)


def ref_sigmoid4x(v: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-4.0 * v))


def reference_step(
    name: str,
    x: Tensor,
    st: dict[str, Tensor],
    p: dict[str, Tensor],
    quant: Callable[[Tensor], Tensor] = ref_identity,
    spike: Callable[[Tensor], Tensor] = ref_sigmoid4x,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One timestep of layer ``name``; ``st`` holds every state (zeros at first), ``p`` the
    activated parameter values already shaped to broadcast against ``x``."""
    dual, syn, rec, family = split_name(name)
    s = dict(st)
    # Step 1: the drive u
    if syn and dual:
        s["pos_syn"] = p["pos_alpha"] * s["pos_syn"] + (1 - p["pos_alpha"]) * pos(x)
        s["neg_syn"] = p["neg_alpha"] * s["neg_syn"] + (1 - p["neg_alpha"]) * neg(x)
        u = s["pos_syn"] + s["neg_syn"]
    elif syn:
        s["syn"] = p["alpha"] * s["syn"] + (1 - p["alpha"]) * x
        u = s["syn"]
    else:
        u = x
    # Step 2: the recurrent trace
    if rec and dual:
        s["pos_rec"] = p["pos_gamma"] * s["pos_rec"] + (1 - p["pos_gamma"]) * pos(s["prev_output"])
        s["neg_rec"] = p["neg_gamma"] * s["neg_rec"] + (1 - p["neg_gamma"]) * neg(s["prev_output"])
        r = s["pos_rec"] + s["neg_rec"]
        pos_delta = p["pos_rec_weight"] * pos(r) + pos(u)
        neg_delta = p["neg_rec_weight"] * neg(r) + neg(u)
    elif rec:
        s["rec"] = p["gamma"] * s["rec"] + (1 - p["gamma"]) * s["prev_output"]
        delta = p["rec_weight"] * s["rec"] + u
    elif dual:
        pos_delta, neg_delta = pos(u), neg(u)
    else:
        delta = u
    # Step 3: the membrane
    ema = family == "LIEMA"
    if dual:
        s["pos_mem"] = p["pos_beta"] * s["pos_mem"] + ((1 - p["pos_beta"]) * pos_delta if ema else pos_delta)
        s["neg_mem"] = p["neg_beta"] * s["neg_mem"] + ((1 - p["neg_beta"]) * neg_delta if ema else neg_delta)
        mem = s["pos_mem"] + s["neg_mem"]
    else:
        s["mem"] = p["beta"] * s["mem"] + ((1 - p["beta"]) * delta if ema else delta)
        mem = s["mem"]
    # Step 4: the output
    if family in ("LI", "LIEMA"):
        return mem, s
    if family == "LIB":
        spikes = quant(spike(mem - p["threshold"] + p["bias"]))
        reset = spikes * p["threshold"]
        out = spikes
    else:
        s_pos = quant(spike(mem - p["pos_threshold"] + p["bias"]))
        s_neg = -quant(spike(-p["neg_threshold"] - mem - p["bias"]))
        reset = s_pos * p["pos_threshold"] + s_neg * p["neg_threshold"]
        out = s_pos + s_neg if family == "LIT" else p["pos_scale"] * s_pos + p["neg_scale"] * s_neg
    if dual:
        s["pos_mem"] = s["pos_mem"] - 0.5 * reset
        s["neg_mem"] = s["neg_mem"] - 0.5 * reset
    else:
        s["mem"] = s["mem"] - reset
    if rec:
        s["prev_output"] = out
    return out, s


def along(value: Tensor, like: Tensor, dim: int) -> Tensor:
    """``value`` (0-d or ``[N]``) shaped to broadcast against ``like`` along ``dim``."""
    if value.ndim == 0:
        return value
    shape = [1] * like.ndim
    shape[dim % like.ndim] = value.numel()
    return value.reshape(shape)


# ----------------------------------------------------------------------------------------
# the tests

STEPS = 24
LAYOUTS = {  # dim -> input shape (neurons at dim)
    -1: (3, 5),
    -3: (2, 5, 3, 2),
    1: (2, 5, 3),
}
QUANTS = {  # name -> (library quant_fn factory, reference quantizer)
    "identity": (None, ref_identity),
    "round_ste": (tt.functional.round_ste, ref_round),
    "stochastic_round_ste": (tt.functional.stochastic_round_ste, ref_stochastic_round),
    "probabilistic_ste": (tt.functional.probabilistic_ste, ref_probabilistic),
}
NAMES = tt.snn.layer_names()


def test_the_32_names_are_the_spec_grammar():
    prefixes = ["", "D", "S", "R", "DS", "DR", "SR", "DSR"]
    spec = {p + f for f in ("LIB", "LIT", "LITS") for p in prefixes}
    spec |= {p + f for f in ("LI", "LIEMA") for p in ("", "D", "S", "DS")}
    assert len(NAMES) == 32 and set(NAMES) == spec


@pytest.mark.parametrize("name", NAMES)
def test_parameters_and_states_follow_the_spec_table(name):
    layer = tt.snn.get_layer_class(name)(4)
    assert layer.param_names() == expected_params(name)
    assert set(layer.state_names()) == expected_states(name)
    defaults = {"alpha": 0.5, "beta": 0.9, "gamma": 0.9, "rec_weight": 0.0, "threshold": 1.0, "bias": 0.0, "scale": 1.0}
    for param in expected_params(name):
        value = getattr(layer, param)
        assert value.shape == (4,)
        torch.testing.assert_close(value, torch.full((4,), defaults[param.removeprefix("pos_").removeprefix("neg_")]))
        assert isinstance(getattr(layer, f"raw_{param}"), torch.nn.Parameter)
    assert all(value is None for _, value in layer.states())


def _build(name: str, dim: int, quant: str, seed: int, rank_offset: int):
    """A layer with random float64 parameters and the reference's view of the same values."""
    gen = torch.Generator().manual_seed(seed)
    shape = LAYOUTS[dim]
    n = shape[dim]
    values = {}
    for i, param in enumerate(expected_params(name)):
        rank = (i + rank_offset) % 2  # every parameter gets rank 0 in some layouts and rank 1 in others
        values[param] = random_value(param, (n,) if rank else (), gen)
    factory, ref_quant = QUANTS[quant]
    kwargs = dict(values)
    if factory is not None:
        kwargs["quant_fn"] = factory()
    layer = tt.snn.get_layer_class(name)(n, dim=dim, **kwargs)
    xs = torch.randn((STEPS, *shape), generator=gen, dtype=torch.float64) * 1.5
    return layer, values, ref_quant, xs


def _library_run(layer, xs: Tensor, seed: int) -> list[tuple[Tensor, dict[str, Tensor]]]:
    torch.manual_seed(seed)
    trace = []
    with torch.no_grad():
        for x in xs:
            out = layer(x)
            trace.append((out, {k: v.clone() for k, v in layer.states()}))
    return trace


def _reference_run(name, values, ref_quant, xs, dim, seed) -> list[tuple[Tensor, dict[str, Tensor]]]:
    torch.manual_seed(seed)
    params = {k: along(v, xs[0], dim) for k, v in values.items()}
    state = {s: torch.zeros_like(xs[0]) for s in expected_states(name)}
    trace = []
    for x in xs:
        out, state = reference_step(name, x, state, params, quant=ref_quant)
        trace.append((out, dict(state)))
    return trace


CASES = [
    (name, dim, quant)
    for name in NAMES
    for dim in LAYOUTS
    for quant in (QUANTS if split_name(name)[3] in FIRING else ["identity"])  # LI / LIEMA take no quant_fn
]


@pytest.mark.parametrize(("name", "dim", "quant"), CASES)
def test_layer_matches_reference(name, dim, quant):
    dim_index, quant_index = list(LAYOUTS).index(dim), list(QUANTS).index(quant)
    seed = NAMES.index(name) * 100 + dim_index * 10 + quant_index
    layer, values, ref_quant, xs = _build(name, dim, quant, seed, rank_offset=dim_index + quant_index)
    for param, value in values.items():
        assert getattr(layer, param).shape == value.shape
        torch.testing.assert_close(getattr(layer, param), value, rtol=1e-12, atol=1e-12)
    got = _library_run(layer, xs, seed)
    want = _reference_run(name, values, ref_quant, xs, dim, seed)
    for t, ((out, states), (ref_out, ref_states)) in enumerate(zip(got, want)):
        assert out.dtype == torch.float64 and out.shape == xs[t].shape
        torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-10, msg=lambda m, t=t: f"{name} output, step {t}: {m}")
        assert set(states) == set(ref_states)
        for key, value in states.items():
            torch.testing.assert_close(
                value, ref_states[key], rtol=1e-9, atol=1e-10, msg=lambda m, key=key, t=t: f"{name}.{key}, step {t}: {m}"
            )
    if quant != "identity" and split_name(name)[3] in FIRING:
        outs = torch.stack([o for o, _ in got])
        assert outs.abs().sum() > 0, "the test should see some spikes"


@pytest.mark.parametrize("name", ["LIB", "DSRLIT", "SRLITS"])
def test_quantized_events_are_exact_integers(name):
    """With round_ste the events are exactly 0/1 (LIB) or -1/0/1 (LIT/LITS before scaling)."""
    layer = tt.snn.get_layer_class(name)(6, quant_fn=tt.functional.round_ste())
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        out = layer(torch.randn(4, 6, generator=gen) * 2)  # LITS scales default to 1
        seen |= set(out.detach().flatten().tolist())
    assert seen <= ({0.0, 1.0} if name.endswith("LIB") else {-1.0, 0.0, 1.0})
    assert len(seen) >= 2


def test_rank_option_and_tensor_values():
    layer = tt.snn.LIB(4, beta=0.5, beta_rank=0, threshold=2.0)
    assert layer.raw_beta.shape == () and layer.raw_threshold.shape == (4,)
    assert layer.raw_beta.dtype == torch.get_default_dtype()
    torch.testing.assert_close(layer.beta, torch.tensor(0.5))
    torch.testing.assert_close(layer.raw_threshold, torch.log(torch.expm1(torch.full((4,), 2.0))))
    # a tensor decides its own rank, whatever p_rank says, and keeps its float dtype
    layer = tt.snn.LIB(4, beta=torch.tensor(0.5, dtype=torch.float64), beta_rank=1, bias=torch.arange(4.0) - 2)
    assert layer.raw_beta.shape == () and layer.raw_beta.dtype == torch.float64
    torch.testing.assert_close(layer.raw_bias, torch.sinh(torch.arange(4.0) - 2))
    torch.testing.assert_close(layer.bias, torch.arange(4.0) - 2)
    # integer tensors become the default float dtype
    layer = tt.snn.LITS(3, pos_scale=torch.tensor([1, -2, 3]))
    assert layer.raw_pos_scale.dtype == torch.get_default_dtype()
    assert layer.pos_scale.tolist() == [1.0, -2.0, 3.0]
    # the raw init is the spec's inverse of each constraint
    layer = tt.snn.DSRLIT(2, pos_alpha=0.25, neg_gamma=0.75, neg_rec_weight=-0.5, pos_threshold=0.5, bias=-1.5)
    torch.testing.assert_close(layer.raw_pos_alpha, torch.logit(torch.full((2,), 0.25)))
    torch.testing.assert_close(layer.raw_neg_gamma, torch.logit(torch.full((2,), 0.75)))
    torch.testing.assert_close(layer.raw_neg_rec_weight, torch.full((2,), -0.5))
    torch.testing.assert_close(layer.raw_pos_threshold, torch.log(torch.expm1(torch.full((2,), 0.5))))
    torch.testing.assert_close(layer.raw_bias, torch.sinh(torch.full((2,), -1.5)))
