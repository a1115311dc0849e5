"""Attribute, property and data docstrings are prose here, never ``type: description``.

Napoleon reads the first line of such a docstring as ``type: description`` when it holds a
colon, so "Whether ... (LIB / LIT / LITS): thresholds" or "Kernel slot -> (name, ...): ..."
would become a bogus type (and a broken cross-reference under ``nitpicky``). This keeps those
docstrings as written; types come from the annotations.
"""

from __future__ import annotations

from typing import Any

from sphinx.ext.napoleon.docstring import GoogleDocstring


def _as_written(self: GoogleDocstring) -> list[str]:
    return self._consume_to_end()


def setup(app: Any) -> dict[str, Any]:
    GoogleDocstring._parse_attribute_docstring = _as_written  # type: ignore[method-assign]
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
