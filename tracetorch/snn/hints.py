"""Why a layer rejects a keyword, worded for the constructor and for model files.

One analysis, :func:`keyword_hint`, reads the grammar's parameter table and says what is
wrong with a keyword: the layer splits it (the ``D`` prefix, or one per event sign), it
does not fire, or another layer has it (the closest one, and what it adds). The layer
constructors (:func:`constructor_message`, a ``TypeError``) and the model-file builder
(:func:`unknown_argument`) word the same answer their own way; a new parameter in the
grammar gets its hints for free. Misspellings fall back to :mod:`tracetorch.suggest`.

Example:
    >>> unknown_argument("LIB", "alpha")
    'LIB has no synaptic trace; SLIB has alpha'
    >>> unknown_argument("DLIB", "beta")
    'DLIB splits beta into pos_beta and neg_beta'
    >>> unknown_argument("DLI", "alpha")
    'DLI has no synaptic trace; DSLI has pos_alpha and neg_alpha'
    >>> unknown_argument("LIB", "beta_rank")
    'write beta: {value: ..., rank: ...} (beta_rank is the Python keyword)'
    >>> keyword_hint(parse("LIB"), "alpha").holder.name
    'SLIB'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tracetorch.snn.grammar import DUAL_SPLIT, Flags, layer_names, param_specs, parse
from tracetorch.suggest import close_matches, did_you_mean

__all__ = ["KeywordHint", "keyword_hint", "constructor_message", "unknown_argument"]

_FIRE_FNS = ("spike_fn", "quant_fn")
_FIRING = "the LIB, LIT and LITS families"
_PREFIXES = {"D": "dual", "S": "synaptic", "R": "recurrent"}
_WITHOUT = {"S": "no synaptic trace", "R": "no recurrent trace", "D": "no dual (pos/neg) split"}
_ADDED_BY = {"S": "the synaptic trace (S prefix)", "R": "the recurrent trace (R prefix)", "D": "the dual (D) prefix"}
_FAMILY_SETS = {
    ("LIB",): "the binary family (LIB)", ("LIT", "LITS"): "the ternary families (LIT, LITS)",
    ("LIB", "LIT", "LITS"): "the firing families (LIB, LIT, LITS)", ("LITS",): "the scaled ternary family (LITS)",
}


@dataclass(frozen=True)
class KeywordHint:
    """What is wrong with a keyword ``key`` on a layer.

    ``kind``: ``"dual_split"`` (the ``D`` prefix turned it into ``pos_``/``neg_``), ``"sign_split"``
    (one per event sign: ternary thresholds, scales), ``"not_firing"`` (``spike_fn``/``quant_fn``
    on LI/LIEMA) or ``"elsewhere"``: ``holder`` is the closest layer taking ``holder_key``
    (``pos_<key>`` when this layer is dual, ``pair`` then true), ``added_by`` what it adds,
    ``missing`` the prefixes it has that this layer lacks, and ``impossible`` says that no layer
    of this family can take it (the ``R`` prefix on LI/LIEMA).
    """

    kind: str
    key: str
    holder: Flags | None = None
    holder_key: str = ""
    pair: bool = False
    added_by: str = ""
    missing: tuple[str, ...] = ()
    impossible: bool = False


def _params(flags: Flags) -> set[str]:
    return {spec.name for spec in param_specs(flags)}


def _prefixes(flags: Flags) -> set[str]:
    return {p for p, attr in _PREFIXES.items() if getattr(flags, attr)}


def _prefix_distance(a: Flags, b: Flags) -> int:
    return len(_prefixes(a) ^ _prefixes(b))


def _added_by(key: str, flags: Flags, holders: list[Flags]) -> str:
    core = key.removeprefix("pos_").removeprefix("neg_")
    if key != core and core in DUAL_SPLIT and not flags.dual:
        return _ADDED_BY["D"]
    needed = set.intersection(*(_prefixes(h) for h in holders)) - _prefixes(flags)
    if needed:
        return _ADDED_BY[min(needed, key="DSR".index)]
    families = tuple(sorted({h.family for h in holders}, key=("LI", "LIEMA", "LIB", "LIT", "LITS").index))
    return _FAMILY_SETS.get(families, "another layer")


def keyword_hint(flags: Flags, key: str) -> KeywordHint | None:
    """What is wrong with ``key`` (a parameter, ``spike_fn`` or ``quant_fn``) on the layer ``flags``; ``None``: unknown."""
    own = _params(flags)
    if key in _FIRE_FNS and not flags.fires:
        return KeywordHint("not_firing", key)
    if f"pos_{key}" in own:
        return KeywordHint("dual_split" if flags.dual and key in DUAL_SPLIT else "sign_split", key)
    pair = flags.dual and key in DUAL_SPLIT
    holder_key = f"pos_{key}" if pair else key
    holders = [parse(n) for n in layer_names() if holder_key in _params(parse(n))]
    if not holders:
        return None
    best = min(holders, key=lambda h: (h.family != flags.family, _prefix_distance(h, flags)))
    missing = tuple(p for p in "DSR" if p in _prefixes(best) - _prefixes(flags)) if best.family == flags.family else ()
    impossible = all(h.recurrent for h in holders) and not flags.fires
    return KeywordHint("elsewhere", key, best, holder_key, pair, _added_by(holder_key if not pair else key, flags, holders),
                       missing, impossible)


def _has(hint: KeywordHint) -> str:
    return f"{hint.holder_key} and neg_{hint.key}" if hint.pair else hint.holder_key


def constructor_message(layer: str, flags: Flags, key: str) -> TypeError:
    """The constructor's error for an unexpected keyword ``key`` (``p``, ``p_rank`` or ``learn_p``)."""
    base = key.removesuffix("_rank").removeprefix("learn_")
    hint = keyword_hint(flags, key if key in _FIRE_FNS else base)
    text = ""
    if hint is None:
        pass
    elif hint.kind == "dual_split":
        text = f" The D prefix splits '{base}' into 'pos_{base}' and 'neg_{base}'."
    elif hint.kind == "sign_split":
        text = f" {layer} has 'pos_{base}' and 'neg_{base}' (one per event sign) instead of '{base}'."
    elif hint.kind == "not_firing":
        text = f" {layer} does not fire; spike_fn/quant_fn belong to {_FIRING}."
    else:
        assert hint.holder is not None
        has = "it" if not hint.pair else _has(hint)
        text = f" '{base}' belongs to {hint.added_by}: {hint.holder.name} has {has}."
    own = ", ".join(s.name for s in param_specs(flags))
    return TypeError(
        f"{layer} got an unexpected keyword argument {key!r}.{text} "
        f"{layer}'s parameters are: {own} (each also as <name>_rank and learn_<name>), "
        f"plus num_neurons, dim{', spike_fn, quant_fn' if flags.fires else ''}."
    )


def unknown_argument(layer: str, key: str, allowed: Iterable[str] = ()) -> str:
    """Why ``layer`` (any registered layer) rejects the model-file argument ``key``, pointing at the layer that has it."""
    if layer in layer_names():
        text = _spec_hint(parse(layer), key)
        if text:
            return text
    allowed = list(allowed)
    close = close_matches(key, allowed, n=2, cutoff=0.6)
    if close:
        return f"{layer} has no argument '{key}'; {did_you_mean(close)}"
    return f"{layer} has no argument '{key}'" + (f"; it takes {', '.join(allowed)}" if allowed else "; it takes none")


def _spec_hint(flags: Flags, key: str) -> str | None:
    name = flags.name
    own = _params(flags)
    for suffix, prefix, field in (("_rank", "", "rank"), ("", "learn_", "learn")):
        base = key.removeprefix(prefix).removesuffix(suffix)
        if base != key and base in own:
            return f"write {base}: {{value: ..., {field}: ...}} ({key} is the Python keyword)"
    hint = keyword_hint(flags, key)
    if hint is None:
        return None
    if hint.kind == "not_firing":
        return f"{name} does not fire; {key} belongs to {_FIRING}"
    if hint.kind in ("dual_split", "sign_split"):
        return f"{name} splits {key} into pos_{key} and neg_{key}"
    assert hint.holder is not None
    if hint.impossible:
        return f"{name} has no recurrent trace (R exists only on LIB, LIT, LITS)"
    if hint.holder.family == flags.family:
        if not hint.missing:
            return None
        return f"{name} has {' and '.join(_WITHOUT[m] for m in hint.missing)}; {hint.holder.name} has {_has(hint)}"
    if not flags.fires:
        return f"{name} does not fire (no threshold); {hint.holder.name} has {key}"
    return f"{name} has no {key}; {hint.holder.name} has it"
