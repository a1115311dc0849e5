"""The naming grammar of the 32 layers and the one parameter table they all read.

    name   := [D] [S] [R] family
    family := "LI" | "LIEMA" | "LIB" | "LIT" | "LITS"      (no R on LI / LIEMA)

:func:`parse` turns a name into :class:`Flags`; :func:`param_specs` lists the
parameters a set of flags implies (name, default, constraint). Layer constructors,
the builder's Pydantic schemas and the docs are all generated from this table.
What the ``D`` prefix splits is :data:`DUAL_SPLIT`. The fused kernels see a layer's
parameters and states in fixed slots: :data:`PARAM_SLOTS` and :data:`STATE_SLOTS` are
that layout (the C++ and Triton constants are tested against them), and
:func:`param_slot_names` / :func:`state_slot_names` say which name fills each slot.
The full equations: ``docs/layers.md``.

Example:
    >>> from tracetorch.snn.grammar import parse, param_specs
    >>> parse("DSRLITS")
    Flags(dual=True, synaptic=True, recurrent=True, family='LITS')
    >>> [p.name for p in param_specs(parse("SLIB"))]
    ['alpha', 'beta', 'threshold', 'bias']
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from tracetorch.suggest import close_matches, did_you_mean

__all__ = [
    "FAMILIES",
    "Flags",
    "ParamSpec",
    "parse",
    "layer_names",
    "param_specs",
    "state_names",
    "closest_names",
    "DUAL_SPLIT",
    "Slot",
    "PARAM_SLOTS",
    "STATE_SLOTS",
    "param_slot_names",
    "state_slot_names",
]

FAMILIES: tuple[str, ...] = ("LI", "LIEMA", "LIB", "LIT", "LITS")
_FIRING = ("LIB", "LIT", "LITS")


@dataclass(frozen=True)
class Flags:
    """What a layer name means: which traces exist and what the output is."""

    dual: bool
    synaptic: bool
    recurrent: bool
    family: str

    @property
    def name(self) -> str:
        return "D" * self.dual + "S" * self.synaptic + "R" * self.recurrent + self.family

    @property
    def fires(self) -> bool:
        """True for LIB / LIT / LITS: thresholds, reset, ``spike_fn`` and ``quant_fn``."""
        return self.family in _FIRING

    @property
    def ema(self) -> bool:
        """True for LIEMA: the membrane integrates ``(1 - beta) * delta``."""
        return self.family == "LIEMA"

    @property
    def ternary(self) -> bool:
        return self.family in ("LIT", "LITS")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a layer: its name, default, constraint and meaning."""

    name: str
    default: float
    constraint: str
    flag: str
    doc: str


DUAL_SPLIT: tuple[str, ...] = ("alpha", "beta", "gamma", "rec_weight")
"""The parameters the ``D`` prefix splits into ``pos_<name>`` / ``neg_<name>`` (not thresholds, bias or scales)."""


def _split(flags: Flags, name: str, default: float, constraint: str, flag: str, doc: str) -> list[ParamSpec]:
    if flags.dual and name in DUAL_SPLIT:
        return [
            ParamSpec(f"pos_{name}", default, constraint, flag, f"{doc} (positive branch)"),
            ParamSpec(f"neg_{name}", default, constraint, flag, f"{doc} (negative branch)"),
        ]
    return [ParamSpec(name, default, constraint, flag, doc)]


@cache
def param_specs(flags: Flags) -> tuple[ParamSpec, ...]:
    """The parameters of a layer with these flags, in the table order of the layer reference (docs/layers.md)."""
    specs: list[ParamSpec] = []
    if flags.synaptic:
        specs += _split(flags, "alpha", 0.5, "sigmoid", "S", "synaptic trace decay")
    specs += _split(flags, "beta", 0.9, "sigmoid", "", "membrane decay")
    if flags.recurrent:
        specs += _split(flags, "gamma", 0.9, "sigmoid", "R", "recurrent trace decay")
        specs += _split(flags, "rec_weight", 0.0, "none", "R", "weight of the recurrent trace")
    if flags.family == "LIB":
        specs.append(ParamSpec("threshold", 1.0, "softplus", "B", "firing threshold"))
    if flags.ternary:
        specs.append(ParamSpec("pos_threshold", 1.0, "softplus", "T", "positive firing threshold"))
        specs.append(ParamSpec("neg_threshold", 1.0, "softplus", "T", "negative firing threshold"))
    if flags.fires:
        specs.append(ParamSpec("bias", 0.0, "arcsinh", flags.family[2:], "firing bias"))
    if flags.family == "LITS":
        specs.append(ParamSpec("pos_scale", 1.0, "none", "TS", "scale of positive events"))
        specs.append(ParamSpec("neg_scale", 1.0, "none", "TS", "scale of negative events"))
    return tuple(specs)


@cache
def state_names(flags: Flags) -> tuple[str, ...]:
    """The hidden states a layer with these flags keeps, in update order."""

    def split(name: str) -> list[str]:
        return [f"pos_{name}", f"neg_{name}"] if flags.dual else [name]

    names: list[str] = []
    if flags.synaptic:
        names += split("syn")
    if flags.recurrent:
        names += split("rec") + ["prev_output"]
    names += split("mem")
    return tuple(names)


@dataclass(frozen=True)
class Slot:
    """One row of the fused kernels' parameter or state layout.

    ``plain`` fills the slot without the split (``None``: the slot exists only split),
    ``split`` with it; ``code`` names the slot's constant in the kernels (``P_<code>`` /
    ``S_<code>`` in ``neuron_kernels.h`` and ``triton_kernels.py``).
    """

    code: str
    plain: str | None
    split: str


PARAM_SLOTS: tuple[Slot, ...] = (
    Slot("A", "alpha", "pos_alpha"), Slot("NA", None, "neg_alpha"),
    Slot("B", "beta", "pos_beta"), Slot("NB", None, "neg_beta"),
    Slot("G", "gamma", "pos_gamma"), Slot("NG", None, "neg_gamma"),
    Slot("W", "rec_weight", "pos_rec_weight"), Slot("NW", None, "neg_rec_weight"),
    Slot("TH", "threshold", "pos_threshold"), Slot("NTH", None, "neg_threshold"),
    Slot("BIAS", "bias", "bias"), Slot("PSC", None, "pos_scale"), Slot("NSC", None, "neg_scale"),
)
"""Parameter slots of the kernels' ``[13, N]`` tensor. The split of the decays and recurrent weights is
the ``D`` prefix (:data:`DUAL_SPLIT`); the threshold's is the ternary families'; the scales exist only split."""

STATE_SLOTS: tuple[Slot, ...] = (
    Slot("SYN", "syn", "pos_syn"), Slot("NSYN", None, "neg_syn"),
    Slot("REC", "rec", "pos_rec"), Slot("NREC", None, "neg_rec"),
    Slot("PREV", "prev_output", "prev_output"),
    Slot("MEM", "mem", "pos_mem"), Slot("NMEM", None, "neg_mem"),
)
"""State slots of the kernels' ``[7, M]`` tensor; the traces split with the ``D`` prefix."""


def _fill(slots: tuple[Slot, ...], own: set[str]) -> tuple[str | None, ...]:
    return tuple(next((name for name in (slot.plain, slot.split) if name in own), None) for slot in slots)


@cache
def param_slot_names(flags: Flags) -> tuple[str | None, ...]:
    """The parameter filling each of :data:`PARAM_SLOTS` for these flags (``None``: an unused slot, zeros)."""
    return _fill(PARAM_SLOTS, {spec.name for spec in param_specs(flags)})


@cache
def state_slot_names(flags: Flags) -> tuple[str | None, ...]:
    """The state filling each of :data:`STATE_SLOTS` for these flags (``None``: an unused slot, zeros)."""
    return _fill(STATE_SLOTS, set(state_names(flags)))


@cache
def layer_names() -> tuple[str, ...]:
    """All 32 valid names, grouped by family, prefixes in canonical order."""
    names = []
    for family in FAMILIES:
        for recurrent in (False, True):
            if recurrent and family not in _FIRING:
                continue
            for dual in (False, True):
                for synaptic in (False, True):
                    names.append(Flags(dual, synaptic, recurrent, family).name)
    order = {"": 0, "D": 1, "S": 2, "R": 3, "DS": 4, "DR": 5, "SR": 6, "DSR": 7}
    return tuple(
        sorted(names, key=lambda n: (FAMILIES.index(_family_of(n)), order[n[: len(n) - len(_family_of(n))]]))
    )


def _family_of(name: str) -> str:
    for family in sorted(FAMILIES, key=len, reverse=True):
        if name.endswith(family):
            return family
    return ""


def closest_names(name: str, candidates: tuple[str, ...] | list[str] | None = None, n: int = 3) -> list[str]:
    """Valid names closest to ``name``; anagrams of the prefix rank first (SDLIB -> DSLIB)."""
    pool = candidates if candidates is not None else layer_names()
    return close_matches(name.upper(), pool, n=n, cutoff=0.5, anagrams=True)


@cache
def parse(name: str) -> Flags:
    """Parse a layer name into :class:`Flags`; invalid names raise ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"a layer name must be a string, got {type(name).__name__}")
    family = _family_of(name)
    prefix = name[: len(name) - len(family)]
    flags = Flags("D" in prefix, "S" in prefix, "R" in prefix, family)
    if family and flags.name == name and name in layer_names():
        return flags
    hint = did_you_mean(closest_names(name), capital=True)
    raise ValueError(
        f"{name!r} is not a valid traceTorch layer name.{' ' + hint if hint else ''} Names are [D][S][R] + one of "
        f"{', '.join(FAMILIES)} (prefixes in that order; no R on LI/LIEMA). "
        f"Valid names: {', '.join(layer_names())}."
    )
