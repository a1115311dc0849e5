"""Short reasons for arguments a layer does not take ("LIB has no synaptic trace; SLIB has alpha").

Everything is derived from the grammar's parameter table, so a new parameter gets
its hint for free.

Example:
    >>> unknown_argument("LIB", "alpha")
    'LIB has no synaptic trace; SLIB has alpha'
    >>> unknown_argument("DLIB", "beta")
    'DLIB splits beta into pos_beta and neg_beta'
    >>> unknown_argument("DLI", "alpha")
    'DLI has no synaptic trace; DSLI has pos_alpha and neg_alpha'
    >>> unknown_argument("LIB", "beta_rank")
    'write beta: {value: ..., rank: ...} (beta_rank is the Python keyword)'
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from tracetorch.snn.grammar import Flags, layer_names, param_specs, parse

__all__ = ["unknown_argument"]

_WHAT = {"S": "no synaptic trace", "R": "no recurrent trace", "D": "no dual (pos/neg) split"}


def _params(flags: Flags) -> set[str]:
    return {spec.name for spec in param_specs(flags)}


def unknown_argument(layer: str, key: str, allowed: Iterable[str] = ()) -> str:
    """Why ``layer`` rejects ``key``, pointing at the layer that has it when there is one."""
    if layer in layer_names():
        hint = _snn_hint(parse(layer), key)
        if hint:
            return hint
    allowed = list(allowed)
    close = difflib.get_close_matches(key, allowed, n=2, cutoff=0.6)
    if close:
        return f"{layer} has no argument '{key}'; did you mean {' or '.join(repr(c) for c in close)}?"
    return f"{layer} has no argument '{key}'" + (f"; it takes {', '.join(allowed)}" if allowed else "; it takes none")


def _snn_hint(flags: Flags, key: str) -> str | None:
    name = flags.name
    own = _params(flags)
    for suffix, prefix in (("_rank", ""), ("", "learn_")):
        base = key.removeprefix(prefix).removesuffix(suffix) if (prefix or suffix) else key
        if base != key and base in own:
            field = "rank" if suffix else "learn"
            return f"write {base}: {{value: ..., {field}: ...}} ({key} is the Python keyword)"
    if key in ("spike_fn", "quant_fn") and not flags.fires:
        return f"{name} does not fire; {key} belongs to the LIB, LIT and LITS families"
    if f"pos_{key}" in own:
        return f"{name} splits {key} into pos_{key} and neg_{key}"
    if flags.dual and _dual_splits(key):
        split = _snn_hint(flags, f"pos_{key}")
        if split and split.endswith(f"has pos_{key}"):
            return split.replace(f"has pos_{key}", f"has pos_{key} and neg_{key}")
    holders = [parse(n) for n in layer_names() if key in _params(parse(n))]
    if holders and all(h.recurrent for h in holders) and flags.family in ("LI", "LIEMA"):
        return f"{name} has no recurrent trace (R exists only on LIB, LIT, LITS)"
    if not holders:
        return None
    best = min(holders, key=lambda f: (f.family != flags.family, _prefix_distance(f, flags)))
    if best.family == flags.family:
        missing = [flag for flag, on in (("D", best.dual), ("S", best.synaptic), ("R", best.recurrent)) if on and not
                   getattr(flags, {"D": "dual", "S": "synaptic", "R": "recurrent"}[flag])]
        if missing:
            return f"{name} has {' and '.join(_WHAT[m] for m in missing)}; {best.name} has {key}"
        return None
    if not flags.fires:
        return f"{name} does not fire (no threshold); {best.name} has {key}"
    return f"{name} has no {key}; {best.name} has it"


def _dual_splits(key: str) -> bool:
    """True for parameters the D prefix turns into pos_/neg_ pairs (decays, recurrent weight)."""
    return any(f"pos_{key}" in _params(parse(n)) and key in _params(Flags(False, *_rest(parse(n))))
               for n in layer_names() if parse(n).dual)


def _rest(flags: Flags) -> tuple[bool, bool, str]:
    return flags.synaptic, flags.recurrent, flags.family


def _prefix_distance(a: Flags, b: Flags) -> int:
    return (a.dual != b.dual) + (a.synaptic != b.synaptic) + (a.recurrent != b.recurrent)
