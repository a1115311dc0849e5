"""Did-you-mean suggestions: the one helper every "unknown name" message in traceTorch uses.

:func:`close_matches` finds the candidates closest to a misspelled word (``difflib`` ratio,
optionally ignoring case, anagrams first: ``SDLIB`` -> ``DSLIB``); :func:`did_you_mean`
words them. Layer names, layer keywords, spec keys, registered functions, datasets and
encoders all go through these two functions.

Example:
    >>> close_matches("rat", ["rate", "latency", "delta"])
    ['rate']
    >>> did_you_mean(close_matches("SDLIB", ["DSLIB", "LIB"], anagrams=True))
    "did you mean 'DSLIB' or 'LIB'?"
    >>> did_you_mean([])
    ''
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches", "did_you_mean"]


def close_matches(word: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6, ignore_case: bool = False,
                  anagrams: bool = False) -> list[str]:
    """Up to ``n`` candidates closest to ``word``, best first (``difflib`` similarity at least ``cutoff``).

    ``ignore_case`` compares lower-cased spellings and returns the candidates as written;
    ``anagrams`` puts candidates with exactly the letters of ``word`` (case ignored) first.
    """
    pool = list(dict.fromkeys(candidates))
    if ignore_case:
        lowered = {c.lower(): c for c in pool}
        close = [lowered[c] for c in difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=cutoff)]
    else:
        close = difflib.get_close_matches(word, pool, n=n, cutoff=cutoff)
    first = [c for c in pool if sorted(c) == sorted(word.upper())] if anagrams else []
    return list(dict.fromkeys(first + close))[:n]


def did_you_mean(matches: Iterable[str], capital: bool = False, quote: bool = True) -> str:
    """``"did you mean 'a' or 'b'?"`` (``capital``: ``"Did you mean ..."``; ``quote=False``: names bare), or ``""``."""
    names = [repr(m) if quote else str(m) for m in matches]
    if not names:
        return ""
    return f"{'D' if capital else 'd'}id you mean {' or '.join(names)}?"
