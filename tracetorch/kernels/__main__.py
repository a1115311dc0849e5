"""``python -m tracetorch.kernels``: build the C++ kernels ahead of time, or see what is cached.

Commands::

    python -m tracetorch.kernels build             # build now (announced, with progress); exit 1 if impossible
    python -m tracetorch.kernels build --dry-run   # what would be built, where, and whether it is cached
    python -m tracetorch.kernels list              # the cached builds (sources / torch / flags versions)

Example:
    >>> from tracetorch.kernels.__main__ import main
    >>> main(["build", "--dry-run"])  # doctest: +ELLIPSIS
    key ...
    0
"""

from __future__ import annotations

import argparse
import logging
import sys

from tracetorch.kernels import cpu

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tracetorch.kernels",
                                     description="Build traceTorch's C++ CPU kernels ahead of time, or list the cached builds.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the kernels for this machine now (a no-op when cached)")
    build.add_argument("--dry-run", action="store_true", help="only show the cache key, directory and status")
    commands.add_parser("list", help="list the cached builds in the extension cache")
    return parser


def _describe(plan: cpu.BuildPlan) -> None:
    reason = cpu.unavailable_reason()
    status = "cached" if plan.built else f"not built (a build takes {cpu.BUILD_TIME})"
    if reason is not None:
        status = f"unavailable: {reason}; {cpu.FALLBACK}"
    print(f"key        {plan.key}\ndirectory  {plan.directory}\nvariant    {plan.variant}\n"
          f"flags      {' '.join(plan.cflags)}\nstatus     {status}")


def _build() -> int:
    if not logging.getLogger().hasHandlers():  # run as a program: show the announcement and the progress
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if cpu.load() is None:
        print("the C++ kernels are not available (see the warning above); traceTorch still works, more slowly",
              file=sys.stderr)
        return 1
    print(f"ready: {cpu.build_plan().library}")
    return 0


def _list() -> int:
    current = cpu.build_plan()
    builds = sorted(path for path in current.root.glob(f"{cpu.PREFIX}_*") if (path / f"{path.name}.so").is_file())
    for path in builds:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        print(f"{path}  {size / 2**20:.1f} MiB{'  (current)' if path == current.directory else ''}")
    if not builds:
        print(f"no cached builds in {current.root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        return _list()
    if args.dry_run:
        _describe(cpu.build_plan())
        return 0
    return _build()


if __name__ == "__main__":
    sys.exit(main())
