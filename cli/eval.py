"""``tt-eval CHECKPOINT [key=value ...]``: evaluate a checkpoint written by ``tt-train``.

The checkpoint's own resolved config rebuilds the dataset and the model; ``key=value``
overrides change it (e.g. ``data.root=/data trainer.device=cpu``).
"""

from __future__ import annotations

import argparse
import json

from tracetorch.cli.errors import USER_ERRORS, fail

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tt-eval", description="Evaluate a tt-train checkpoint on its dataset.")
    parser.add_argument("checkpoint", help="checkpoint directory (run_dir/checkpoints/step_*)")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value, e.g. data.root=/data")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    from tracetorch.training import evaluate_checkpoint
    from tracetorch.training.progress import summary_table

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"overrides must be key=value, got {' '.join(bad)}")
    try:
        result = evaluate_checkpoint(args.checkpoint, args.overrides, split=args.split)
    except USER_ERRORS as err:
        fail("tt-eval", err)
    if args.json:
        print(json.dumps(result))
    else:
        from rich.console import Console

        Console().print(summary_table(result, title=f"Evaluation ({args.split})"))


if __name__ == "__main__":
    main()
