"""``tt-schema [-o FILE]``: write the JSON Schema of model spec files (for editors).

Point yaml-language-server at it with ``# yaml-language-server: $schema=<file>`` at the
top of a model file to get completion and checks while typing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tracetorch.builder import json_schema

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tt-schema", description="Write the JSON Schema of traceTorch model specs.")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
